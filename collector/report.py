"""`collector report --sweep NAME --out DIR`: the scaling study's tables and plots for one sweep.

Writes points.csv, series.csv, fits.csv, runs.csv, step_energy.csv, one PNG per plot and
report.html (self-contained: the PNGs are embedded as data URIs), and prints the points table.
The tables themselves are built in `report_tables.py`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from collector.analysis import StudyAnalysis, analyze, step_energy_by_point
from collector.config import DEFAULT_DB_URL
from collector.errors import CollectorError
from collector.report_tables import (
    fit_rows,
    points_rows,
    series_rows,
    terminal_rows,
    text_table,
    write_csvs,
)
from collector.summary import RunSummary


@dataclass(frozen=True)
class Report:
    analysis: StudyAnalysis
    files: list[Path]
    table: str  # the terminal table


def html_page(sweep: str, a: StudyAnalysis, plots: list[tuple[str, Path]], n_runs: int) -> str:
    def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        trs = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
        )
        return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"

    figs = "".join(
        f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{html.escape(t)}</figcaption></figure>'
        for t, p in plots
    )
    pareto = ", ".join(a.pareto) or "-"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>parawatt sweep {html.escape(sweep)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;font-size:12px;
margin-bottom:1.5em}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}
th{{background:#eee}}figure{{display:inline-block;margin:0.5em}}img{{max-width:640px}}</style>
</head><body>
<h1>Scaling study: sweep {html.escape(sweep)}</h1>
<p>{len(a.points)} point(s), {n_runs} run(s) ({len(a.runs)} completed). Values are mean ± standard
deviation over repeats (ddof=0, as in Huber et al., arXiv:2508.07706). Energy = GPUs + CPU packages +
DRAM where measured; ratios are each metric over its value at the smallest GPU count of the series.</p>
<h2>Points</h2>{table(*points_rows(a))}
<h2>Series: speed-up, parallel efficiency and efficiency ratios</h2>{table(*series_rows(a))}
<h2>Energy vs GPU-hours fits</h2>{table(*fit_rows(a))}
<h2>Runtime-energy Pareto front</h2><p>{html.escape(pareto)}</p>
<h2>Plots</h2>{figs}
</body></html>
"""


def build_report(
    sweep: str, runs: Sequence[RunSummary], step_energy_j: Mapping[str, Sequence[float]], out: Path
) -> Report:
    from collector.plots import all_plots  # matplotlib: only paid by `collector report`

    out.mkdir(parents=True, exist_ok=True)
    a = analyze(runs)
    by_point = step_energy_by_point(a.points, step_energy_j)
    files = write_csvs(a, by_point, out)
    plots = all_plots(a, by_point, out)
    page = out / "report.html"
    page.write_text(html_page(sweep, a, plots, len(runs)))
    files += [p for _, p in plots] + [page]
    table = text_table(*terminal_rows(a))
    if a.energy_fits:
        table += "\n\n" + text_table(*fit_rows(a))
    return Report(a, files, table)


def load_sweep(db_url: str, sweep: str) -> tuple[list[RunSummary], dict[str, list[float]]]:
    """The sweep's runs and each run's job-level step energies, from an existing database."""
    from collector import queries
    from collector.db import open_existing

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
    help="Directory for the CSV files, PNG plots and report.html.",
)
@click.option(
    "--db",
    "db_url",
    default=DEFAULT_DB_URL,
    show_default=True,
    help="Database URL (sqlite:///FILE or postgresql+psycopg://...).",
)
def report(sweep: str, out_dir: Path, db_url: str) -> None:
    """Tables, fits and plots of the scaling study for one sweep."""
    try:
        runs, steps = load_sweep(db_url, sweep)
    except CollectorError as exc:
        raise click.ClickException(str(exc)) from None
    if not runs:
        raise click.ClickException(f"no runs tagged sweep={sweep} in {db_url}")
    try:
        result = build_report(sweep, runs, steps, out_dir)
    except OSError as exc:
        raise click.ClickException(
            f"cannot write the report to {out_dir}: {exc.strerror or exc}"
        ) from None
    click.echo(result.table)
    click.echo(f"\nwrote {len(result.files)} files to {out_dir} (open {out_dir / 'report.html'})")
