"""The study report's tables: rows for the terminal and the HTML page, and the CSV files.

CSV numbers are written in full precision; the terminal and HTML round to 4 significant digits.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from collector.analysis import (
    RUN_METRICS,
    LinearFit,
    Stat,
    StudyAnalysis,
    accuracy_keys,
    distribution,
    point_id_of,
)

# (header, metric) of the points table; the accuracy column is added per report.
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
TERMINAL_DROP = {"series", "nodes", "samples", "active kWh", "kWh/node", "samples/GPU-h"}
RATIO_METRICS = (
    "energy_kwh",
    "runtime_s",
    "gpu_hours",
    "kwh_per_gpu_hour",
    "samples_per_gpu_hour",
    "updates_per_gpu_hour",
    "j_per_sample",
)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def fmt_stat(s: Stat | None) -> str:
    if s is None or s.mean is None:
        return "-"
    return fmt(s.mean) if s.n < 2 else f"{fmt(s.mean)} ± {fmt(s.std)}"


def _columns(a: StudyAnalysis) -> list[tuple[str, str]]:
    return list(POINT_COLUMNS) + [(k, k) for k in accuracy_keys(a.points)]


def points_rows(a: StudyAnalysis) -> tuple[list[str], list[list[str]]]:
    cols = _columns(a)
    head = _names("point series GPUs nodes LBS GBS runs samples") + [h for h, _ in cols]
    head.append("flags")
    rows = []
    for p in a.points:
        runs = str(len(p.run_ids)) + (
            f" (+{p.not_completed} not completed)" * bool(p.not_completed)
        )
        shape = [p.gpus, p.nodes, p.local_batch_size, p.global_batch_size]
        rows.append(
            [p.point_id, ",".join(p.series), *map(str, shape), runs, fmt(p.mean("samples"))]
            + [fmt_stat(p.metrics.get(m)) for _, m in cols]
            + [_flags(p.flags)]
        )
    return head, rows


def terminal_rows(a: StudyAnalysis) -> tuple[list[str], list[list[str]]]:
    """The points table narrowed to what fits a terminal (the HTML and CSV have every column)."""
    head, rows = points_rows(a)
    keep = [i for i, h in enumerate(head) if h not in TERMINAL_DROP]
    return [head[i] for i in keep], [[r[i] for i in keep] for r in rows]


def series_rows(a: StudyAnalysis) -> tuple[list[str], list[list[str]]]:
    metrics = list(RATIO_METRICS) + accuracy_keys(a.points)
    head = _names("series|scaling|point|GPUs|speed-up|parallel eff.", "|")
    rows = [
        [r.series, r.scaling, r.point_id, str(r.gpus), fmt(r.speedup), fmt(r.parallel_efficiency)]
        + [fmt(r.ratios.get(m)) for m in metrics]
        for r in a.series
    ]
    return head + [f"{m} ratio" for m in metrics], rows


def fit_rows(a: StudyAnalysis) -> tuple[list[str], list[list[str]]]:
    head = _names(
        "model|hardware|runs|kWh/GPU-h (slope)|intercept kWh|R²|samples/GPU-h|updates/GPU-h|"
        "d(kWh/GPU-h)/d(samples/GPU-h)|R² (samples)|d(kWh/GPU-h)/d(updates/GPU-h)|R² (updates)",
        "|",
    )
    rows = []
    for f in a.energy_fits:
        n, *fit = _fit_cells(f.fit, n=True)
        cells = [*fit, f.samples_per_gpu_hour, f.updates_per_gpu_hour]
        cells += _fit_cells(f.vs_samples) + _fit_cells(f.vs_updates)
        rows.append([f.model, f.hardware, "" if n is None else str(n)] + [fmt(c) for c in cells])
    return head, rows


def text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def write_csvs(a: StudyAnalysis, by_point: Mapping[str, Sequence[float]], out: Path) -> list[Path]:
    metrics = list(RUN_METRICS) + sorted(
        {k for p in a.points for k in p.metrics} - set(RUN_METRICS)
    )
    point_head = _names(
        "point series scaling model hardware gpus nodes lbs gbs runs not_completed flags"
    )
    points = [
        [p.point_id, ";".join(p.series), ";".join(p.scaling), p.model, p.hardware, p.gpus]
        + [p.nodes, p.local_batch_size, p.global_batch_size, len(p.run_ids), p.not_completed]
        + [_flags(p.flags)]
        + [v for m in metrics for v in _stat_cells(p.metrics.get(m))]
        for p in a.points
    ]
    ratio_names = sorted({k for r in a.series for k in r.ratios})
    series_head = _names("series scaling point gpus baseline_point speedup parallel_efficiency")
    series = [
        [r.series, r.scaling, r.point_id, r.gpus, r.baseline_point, r.speedup]
        + [r.parallel_efficiency]
        + [r.ratios.get(k) for k in ratio_names]
        for r in a.series
    ]
    fit_head = _names(
        "model hardware runs slope_kwh_per_gpu_hour intercept_kwh r2 samples_per_gpu_hour "
        "updates_per_gpu_hour vs_samples_slope vs_samples_r2 vs_updates_slope vs_updates_r2"
    )
    fits = [
        [f.model, f.hardware, *_fit_cells(f.fit, n=True), f.samples_per_gpu_hour]
        + [f.updates_per_gpu_hour, *_fit_cells(f.vs_samples), *_fit_cells(f.vs_updates)]
        for f in a.energy_fits
    ]
    run_names = sorted({k for _, m in a.runs for k in m})
    runs = [
        [r.run_id, point_id_of(r), r.tags.get("repeat", ""), r.status, _flags(r.flags)]
        + [m.get(k) for k in run_names]
        for r, m in a.runs
    ]
    dists = [(pid, distribution(v)) for pid, v in by_point.items()]
    steps = [[pid, d.n, d.mean, d.median, d.p05, d.p95] for pid, d in dists if d is not None]
    tables = {
        "points.csv": (point_head + [f"{m}_{s}" for m in metrics for s in ("mean", "std")], points),
        "series.csv": (series_head + [f"{k}_ratio" for k in ratio_names], series),
        "fits.csv": (fit_head, fits),
        "runs.csv": (_names("run_id point repeat status flags") + run_names, runs),
        "step_energy.csv": (_names("point steps mean_j median_j p05_j p95_j"), steps),
    }
    paths = []
    for name, (head, rows) in tables.items():
        with (out / name).open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(head)
            writer.writerows([["" if v is None else v for v in row] for row in rows])
        paths.append(out / name)
    return paths


def _names(text: str, sep: str | None = None) -> list[str]:
    """Column names written as one string (long header lists stay readable)."""
    return text.split(sep)


def _flags(flags) -> str:
    return ";".join(sorted(flags))


def _stat_cells(s: Stat | None) -> list[float | None]:
    return [None, None] if s is None else [s.mean, s.std]


def _fit_cells(f: LinearFit | None, n: bool = False) -> list:
    if n:
        return [None] * 4 if f is None else [f.n, f.slope, f.intercept, f.r2]
    return [None, None] if f is None else [f.slope, f.r2]
