"""The study report's tables: tidy CSV files, the terminal summary and the HTML page's rows.

CSV files are tidy long format (one observation per row, one value per cell, numbers in full
precision, a `unit` column where a metric has one), so `pandas.read_csv` gives analysable frames
directly. The terminal summary is compact by default (fits 100 columns); `--wide` shows every
column. Terminal and HTML round to 3-4 significant digits, and say what the means leave out: a
mean over fewer runs than the point's completed ones carries " (n=k)", a series whose baseline is
not its smallest GPU count says why, and the runs not completed are named (bounded; runs.csv and
flags.csv have every run of the sweep, any status).
"""

from __future__ import annotations

import csv
import textwrap
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from collector.report.analysis import (
    RUN_METRICS,
    UNITS,
    LinearFit,
    SeriesPoint,
    Stat,
    StudyAnalysis,
    accuracy_keys,
    distribution,
    point_id_of,
)
from collector.report.text import text_table

TERMINAL_WIDTH = 100
LEFT_OUT_SHOWN = 20  # runs left out named in the terminal and HTML; runs.csv has them all
N_SUFFIX = " (n={})"
N_NOTE = (
    "(n=k): mean over k of the point's completed runs; the others lack that metric (energy above "
    "idle unknown, no accuracy reported, ...)"
)
# (header, metric) of the wide points table; the accuracy columns are added per report.
POINT_COLUMNS = (
    ("energy kWh", "energy_kwh"),
    ("active kWh", "active_energy_kwh"),
    ("kWh/node", "energy_per_node_kwh"),
    ("runtime s", "runtime_s"),
    ("GPU-h", "gpu_hours"),
    ("kWh/GPU-h", "kwh_per_gpu_hour"),
    ("samples/GPU-h", "samples_per_gpu_hour"),
    ("updates/GPU-h", "updates_per_gpu_hour"),
    ("J/sample", "j_per_sample"),
    ("W/GPU", "power_per_gpu_w"),
    ("start °C", "start_temperature_c"),
)
COMPACT_POINT_COLUMNS = (("energy kWh", "energy_kwh"), ("runtime s", "runtime_s"))
ACCURACY_HEADERS = {
    "top1_error": "top-1 err %",
    "top5_error": "top-5 err %",
    "rmse": "RMSE σ",
    "acc": "ACC",
}
RATIO_METRICS = (
    "energy_kwh",
    "runtime_s",
    "gpu_hours",
    "kwh_per_gpu_hour",
    "samples_per_gpu_hour",
    "updates_per_gpu_hour",
    "j_per_sample",
)
COMPACT_RATIOS = (("energy", "energy_kwh"), ("runtime", "runtime_s"), ("GPU-h", "gpu_hours"))


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def fmt_stat(s: Stat | None, digits: int = 4) -> str:
    if s is None or s.mean is None:
        return "-"
    if s.std is None:
        return fmt(s.mean, digits)
    return f"{fmt(s.mean, digits)} ± {fmt(s.std, 2)}"


def fmt_point_stat(s: Stat | None, runs: int, digits: int = 4) -> str:
    """A point's cell; a mean over fewer than its `runs` completed runs says over how many, so a
    mean of two runs does not pass for one of the three the "runs" column counts."""
    text = fmt_stat(s, digits)
    return text + N_SUFFIX.format(s.n) if s is not None and 0 < s.n < runs else text


def fit_to_width(head: list[str], rows: list[list[str]], width: int = TERMINAL_WIDTH) -> str:
    """The table, with its rightmost columns left out (and said so) until it fits `width`."""
    keep = len(head)
    while True:
        text = text_table(head[:keep], [r[:keep] for r in rows])
        if max(map(len, text.splitlines())) <= width or keep <= 2:
            break
        keep -= 1
    if keep < len(head):
        text += f"\n({len(head) - keep} more column(s): --wide)"
    return text


def _accuracy(a: StudyAnalysis) -> list[tuple[str, str]]:
    return [(ACCURACY_HEADERS.get(k, k), k) for k in accuracy_keys(a.points)]


def points_rows(a: StudyAnalysis, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """One row per point. Compact, a point's runs not completed read "(+k left out)" (the summary
    names them under that title): shorter than "not completed", it leaves the accuracy columns
    room beside the " (n=k)" suffixes."""
    cols = list(COMPACT_POINT_COLUMNS if compact else POINT_COLUMNS) + _accuracy(a)
    ids = "point GPUs GBS runs" if compact else "point series mode GPUs nodes LBS GBS runs samples"
    head = ids.split() + [h for h, _ in cols] + ["flags"]
    digits = 3 if compact else 4
    left = "left out" if compact else "not completed"
    rows = []
    for p in a.points:
        runs = str(len(p.run_ids)) + f" (+{p.not_completed} {left})" * bool(p.not_completed)
        if compact:
            ident = [p.point_id, str(p.gpus), str(p.global_batch_size), runs]
        else:
            shape = [p.gpus, p.nodes, p.local_batch_size, p.global_batch_size]
            ident = [p.point_id, ",".join(p.series), p.mode, *map(str, shape), runs]
            ident.append(fmt(p.mean("samples")))
        cells = [fmt_point_stat(p.metrics.get(m), len(p.run_ids), digits) for _, m in cols]
        rows.append(ident + cells + [",".join(sorted(p.flags)) or "-"])
    if compact and not any(p.flags for p in a.points):
        head, rows = head[:-1], [r[:-1] for r in rows]
    return head, rows


def series_rows(a: StudyAnalysis, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    names = {m: h for h, m in POINT_COLUMNS} | ACCURACY_HEADERS
    ratios = (
        list(COMPACT_RATIOS)
        if compact
        else [(names.get(m, m), m) for m in [*RATIO_METRICS, *accuracy_keys(a.points)]]
    )
    head = ["series", "scaling", "point", "GPUs", "speed-up", "parallel eff."]
    head += [f"{h} ratio" for h, _ in ratios]
    digits = 3 if compact else 4
    rows = [
        [r.series, r.scaling, r.point_id, str(r.gpus)]
        + [fmt(r.speedup, digits), fmt(r.parallel_efficiency, digits)]
        + [fmt(r.ratios.get(m), digits) for _, m in ratios]
        for r in a.series
    ]
    return head, rows


def fit_rows(a: StudyAnalysis, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    head = ["model", "hardware", "runs", "kWh/GPU-h (slope)", "95% CI", "R²"]
    if not compact:
        head += ["intercept kWh", "samples/GPU-h", "updates/GPU-h"]
        head += ["d(kWh/GPU-h)/d(samples/GPU-h)", "R² (samples)"]
        head += ["d(kWh/GPU-h)/d(updates/GPU-h)", "R² (updates)"]
    rows = []
    for f in a.energy_fits:
        fit = f.fit
        ci = "-" if fit is None or fit.slope_ci95 is None else _ci(fit.slope_ci95)
        row = [f.model, f.hardware, "-" if fit is None else str(fit.n)]
        row += [fmt(fit and fit.slope), ci, fmt(fit and fit.r2)]
        if not compact:
            row += [fmt(fit and fit.intercept), fmt(f.samples_per_gpu_hour)]
            row += [fmt(f.updates_per_gpu_hour)]
            for sub in (f.vs_samples, f.vs_updates):
                row += [fmt(sub and sub.slope), fmt(sub and sub.r2)]
        rows.append(row)
    return head, rows


def _ci(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:.4g}, {ci[1]:.4g}]"


def points_notes(text: str) -> list[str]:
    """The " (n=k)" suffix explained, where the points table (as shown) has one."""
    return [N_NOTE] if "(n=" in text else []


def baseline_notes(a: StudyAnalysis) -> list[str]:
    """One line per series whose ratios are not to its smallest GPU count: the baseline and the
    smaller points without a completed run it passed over."""
    done = {p.point_id for p in a.points if p.run_ids}
    members: dict[tuple[str, str], list[SeriesPoint]] = defaultdict(list)
    for r in a.series:  # in GPU order within each series
        members[(r.series, r.scaling)].append(r)
    notes = []
    for (name, _), rows in members.items():
        base = rows[0].baseline_point
        if base not in done:
            notes.append(f"series {name}: no ratios; none of its points has a completed run")
            continue
        before = rows[: [r.point_id for r in rows].index(base)]
        if before:
            skipped = ", ".join(f"{r.point_id} ({_gpus(r.gpus)})" for r in before)
            verb = "has" if len(before) == 1 else "have"
            notes.append(
                f"series {name}: ratios to {base} ({_gpus(rows[0].baseline_gpus)}); "
                f"{skipped} {verb} no completed run"
            )
    return notes


def _gpus(n: int) -> str:
    return f"{n} GPU" + "s" * (n != 1)


def left_out_rows(a: StudyAnalysis) -> tuple[list[str], list[list[str]], list[str]]:
    """The runs not completed, which no statistic includes: the first LEFT_OUT_SHOWN named,
    then how many more (runs.csv lists them all, with what is known of them)."""
    runs = a.left_out
    rows = [
        [r.run_id, point_id_of(r), r.tags.get("repeat") or "-", r.status]
        for r in runs[:LEFT_OUT_SHOWN]
    ]
    more = len(runs) - len(rows)
    return ["run", "point", "repeat", "status"], rows, [f"and {more} more: runs.csv"] * (more > 0)


def group_name(model: str, hardware: str) -> str:
    return f"{model} on {hardware or 'unknown hardware'}"


def pareto_lines(a: StudyAnalysis) -> list[str]:
    """Each (model, hardware)'s runtime-energy Pareto front, fastest first."""
    return [f"{group_name(*key)}: {', '.join(ids)}" for key, ids in a.pareto.items()]


def terminal_summary(a: StudyAnalysis, wide: bool = False) -> str:
    """Points, series (speed-up, efficiency, ratios), fits, Pareto fronts and the runs left out
    of the statistics; compact unless `wide`."""
    parts = []
    for title, build in (
        ("points (mean ± sample std over repeats)", points_rows),
        ("series: speed-up, parallel efficiency, ratios to the baseline", series_rows),
        ("energy vs GPU-hours", fit_rows),
    ):
        head, rows = build(a, compact=not wide)
        if not rows:
            continue
        body = text_table(head, rows) if wide else fit_to_width(head, rows)
        notes = points_notes(body) if build is points_rows else []
        notes += baseline_notes(a) if build is series_rows else []
        parts.append("\n".join([title, body, *_wrap(notes)]))
    if a.pareto:
        title = "runtime-energy Pareto front per model and hardware (fastest first)"
        parts.append("\n".join([title, *_wrap(pareto_lines(a))]))
    head, rows, more = left_out_rows(a)
    if rows:
        title = "runs left out of the statistics (not completed)"
        parts.append("\n".join([title, text_table(head, rows), *more]))
    return "\n\n".join(parts)


def _wrap(lines: Sequence[str]) -> list[str]:
    """Notes at TERMINAL_WIDTH (a long series or point name must not widen the summary)."""
    return [
        textwrap.fill(
            x,
            TERMINAL_WIDTH,
            subsequent_indent="  ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        for x in lines
    ]


# ---- tidy CSV --------------------------------------------------------------------------------

POINT_IDS = ["point", "model", "hardware", "mode", "gpus", "nodes", "lbs", "gbs"]


def csv_tables(a: StudyAnalysis, by_point: Mapping[str, Sequence[float]]) -> dict[str, tuple]:
    """{file name: (header, rows)}; every cell a scalar (str, int, float or empty)."""
    metrics = list(RUN_METRICS) + sorted(
        {k for p in a.points for k in p.metrics} - set(RUN_METRICS)
    )
    points = []
    for p in a.points:
        ident = [p.point_id, p.model, p.hardware, p.mode, p.gpus, p.nodes]
        ident += [p.local_batch_size, p.global_batch_size, len(p.run_ids), p.not_completed]
        rows = [
            [*ident, m, UNITS.get(m, ""), s.n, s.mean, s.std]
            for m in metrics
            if (s := p.metrics.get(m)) is not None and s.n
        ]
        points += rows or [[*ident, "", "", 0, None, None]]  # no completed run: still counted
    series = []
    for r in a.series:
        ident = [r.series, r.scaling, r.point_id, r.gpus, r.baseline_point, r.baseline_gpus]
        values = [("speedup", r.speedup, r.speedup_std)]
        values.append(("parallel_efficiency", r.parallel_efficiency, r.parallel_efficiency_std))
        values += [(f"{k}_ratio", v, r.ratio_std.get(k)) for k, v in sorted(r.ratios.items())]
        series += [[*ident, name, v, sd] for name, v, sd in values if v is not None]
    fits = []
    for f in a.energy_fits:
        for fit in (f.fit, f.vs_samples, f.vs_updates):
            if fit is not None:
                lo, hi = fit.slope_ci95 or (None, None)
                fits.append([f.model, f.hardware, fit.x, fit.y, fit.n, fit.slope, lo, hi])
                fits[-1] += [fit.intercept, fit.r2]
    runs, flags = [], []
    for r, m in a.all_runs:  # every status: a run left out of the statistics is named here
        ident = [r.run_id, point_id_of(r), r.tags.get("repeat", ""), r.status]
        values = [[*ident, k, UNITS.get(k, ""), v] for k, v in sorted(m.items()) if v is not None]
        runs += values or [[*ident, "", "", None]]
        flags += [[r.run_id, point_id_of(r), f] for f in sorted(r.flags)]
    members = [
        [p.point_id, s, k] for p in a.points for s, k in zip(p.series, p.scaling, strict=True)
    ]
    dists = [(pid, distribution(v)) for pid, v in by_point.items()]
    steps = [[pid, d.n, d.mean, d.median, d.p05, d.p95] for pid, d in dists if d is not None]
    ids = [*POINT_IDS, "runs", "not_completed"]
    return {
        "points.csv": ([*ids, "metric", "unit", "n", "mean", "std"], points),
        "series.csv": (
            _names("series scaling point gpus baseline_point baseline_gpus metric value std"),
            series,
        ),
        "fits.csv": (
            _names("model hardware x y n slope slope_ci95_low slope_ci95_high intercept r2"),
            fits,
        ),
        "runs.csv": (_names("run_id point repeat status metric unit value"), runs),
        "flags.csv": (_names("run_id point flag"), flags),
        "point_series.csv": (_names("point series scaling"), members),
        "step_energy.csv": (_names("point steps mean_j median_j p05_j p95_j"), steps),
    }


def _names(text: str) -> list[str]:
    """Column names written as one string (long header lists stay readable)."""
    return text.split()


def write_csvs(a: StudyAnalysis, by_point: Mapping[str, Sequence[float]], out: Path) -> list[Path]:
    paths = []
    for name, (head, rows) in csv_tables(a, by_point).items():
        with (out / name).open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(head)
            writer.writerows([["" if v is None else v for v in row] for row in rows])
        paths.append(out / name)
    return paths


def fit_label(fit: LinearFit) -> str:
    """The fit as the figure legend and the HTML caption state it."""
    ci = "" if fit.slope_ci95 is None else f" (95% CI {_ci(fit.slope_ci95)})"
    r2 = "n/a" if fit.r2 is None else f"{fit.r2:.3f}"
    return f"fit: {fit.slope:.3g} kWh/GPU-h{ci}, R² {r2}"
