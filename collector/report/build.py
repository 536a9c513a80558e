"""`collector report --sweep NAME --out DIR`: the scaling study's tables and figures for one sweep.

Writes tidy CSV files (points, series, fits, runs, flags, point_series, step_energy), every
figure as PNG and vector PDF (file name = the title's slug), the combined overview figure, and
report.html (rendered from a jinja2 template; self-contained: the PNGs are embedded as data URIs),
and prints a terminal summary that fits 100 columns (`--wide`: every column).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from collector.config import DEFAULT_DB_URL
from collector.errors import CollectorError
from collector.report.analysis import StudyAnalysis, analyze, step_energy_by_point
from collector.report.tables import (
    baseline_notes,
    fit_rows,
    left_out_rows,
    pareto_lines,
    points_notes,
    points_rows,
    series_rows,
    terminal_summary,
    write_csvs,
)
from collector.summary import RunSummary

TEMPLATES = Path(__file__).parent / "assets" / "templates"


@dataclass(frozen=True)
class Report:
    analysis: StudyAnalysis
    files: list[Path]
    table: str  # the terminal summary


def html_page(sweep: str, a: StudyAnalysis, figures, n_runs: int) -> str:
    import jinja2  # only `collector report` pays for it

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # sweep names, point ids and hardware names are user strings
        undefined=jinja2.StrictUndefined,
    )
    points = points_rows(a)
    cells = " ".join(c for row in points[1] for c in row)
    left_head, left, more = left_out_rows(a)
    tables = [
        {"title": title, "head": head, "rows": rows, "notes": notes}
        for title, (head, rows), notes in (
            ("Points", points, points_notes(cells)),
            (
                "Series: speed-up, parallel efficiency and efficiency ratios",
                series_rows(a),
                baseline_notes(a),
            ),
            ("Energy vs GPU-hours fits", fit_rows(a), []),
            ("Runs left out of the statistics (not completed)", (left_head, left), more),
        )
        if rows
    ]
    figs = [
        {
            "title": f.title,
            "caption": f.caption,
            "data": base64.b64encode(f.png.read_bytes()).decode(),
            "pdf": f.files[1].name,
        }
        for f in figures
    ]
    return env.get_template("report.html.j2").render(
        sweep=sweep,
        points=len(a.points),
        runs=n_runs,
        completed=len(a.runs),
        tables=tables,
        pareto=pareto_lines(a),
        figures=figs,
    )


def build_report(
    sweep: str,
    runs: Sequence[RunSummary],
    step_energy_j: Mapping[str, Sequence[float]],
    out: Path,
    wide: bool = False,
) -> Report:
    from collector.report.figures import render_all  # matplotlib: only paid by `report`

    out.mkdir(parents=True, exist_ok=True)
    a = analyze(runs)
    by_point = step_energy_by_point(a.points, step_energy_j)
    files = write_csvs(a, by_point, out)
    figures = render_all(a, by_point, out)
    page = out / "report.html"
    page.write_text(html_page(sweep, a, figures, len(runs)))
    files += [p for f in figures for p in f.files] + [page]
    return Report(a, files, terminal_summary(a, wide=wide))


def load_sweep(db_url: str, sweep: str) -> tuple[list[RunSummary], dict[str, list[float]]]:
    """The sweep's runs and each run's job-level step energies, from an existing database."""
    from collector.store import queries
    from collector.store.db import open_existing

    engine = open_existing(db_url)
    try:
        runs = queries.run_summaries(engine, sweep=sweep)
        steps = {r.run_id: list(queries.step_energies(engine, r.run_id)) for r in runs}
    finally:
        engine.dispose()
    return runs, steps


@click.command("report")
@click.option("--sweep", required=True, help="Sweep name (the runs' `sweep` tag).")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the CSV files, the figures (PNG + PDF) and report.html.",
)
@click.option(
    "--db",
    "db_url",
    default=DEFAULT_DB_URL,
    show_default=True,
    help="Database URL (sqlite:///FILE or postgresql+psycopg://...).",
)
@click.option("--wide", is_flag=True, help="Print every column (default: fit 100 columns).")
def report(sweep: str, out_dir: Path, db_url: str, wide: bool) -> None:
    """Tables, fits and plots of the scaling study for one sweep."""
    try:
        runs, steps = load_sweep(db_url, sweep)
    except CollectorError as exc:
        raise click.ClickException(str(exc)) from None
    if not runs:
        raise click.ClickException(f"no runs tagged sweep={sweep} in {db_url}")
    try:
        result = build_report(sweep, runs, steps, out_dir, wide=wide)
    except OSError as exc:
        raise click.ClickException(
            f"cannot write the report to {out_dir}: {exc.strerror or exc}"
        ) from None
    click.echo(result.table)
    click.echo(f"\nwrote {len(result.files)} files to {out_dir} (open {out_dir / 'report.html'})")
