"""The study report's figures, drawn for a paper: matplotlib's object API on the Agg canvas (no
pyplot global state, no display), each figure saved as PNG and as vector PDF.

Conventions every figure keeps: one colour per series (the same in every figure and legend),
GPU counts on a log2 axis with integer ticks, units in every axis label, points at the mean over
repeats with the sample standard deviation as error bar, fonts sized for a 3.5 in column.
The figure catalogue (titles, file names, captions, the combined figure) is `report_figures.py`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from collector.report.analysis import UNITS, PointStats, Stat, StudyAnalysis, accuracy_keys
from collector.report.tables import fit_label, group_name

COLUMN_IN = 3.5  # one column of a two-column paper
PAGE_IN = 7.16  # both columns
PNG_DPI = 200
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "legend.fontsize": 6.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "errorbar.capsize": 2,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text (searchable, editable)
    "svg.fonttype": "none",
}
MARKERS = "osD^vP*Xph<>"
NO_SERIES = "(no series)"
ACCURACY_LABELS = {
    "top1_error": "top-1 error (%)",
    "top5_error": "top-5 error (%)",
    "rmse": "RMSE (σ, normalised)",
    "acc": "ACC (anomaly corr., 1)",
    "loss": "final loss (1)",
}
MODE_NAMES = {"pretrain": "pre-training", "finetune": "fine-tuning"}


@dataclass(frozen=True)
class Ctx:
    """What every drawing function needs: the analysis and the colour of each series / group."""

    a: StudyAnalysis
    by_point: Mapping[str, Sequence[float]]
    series_color: dict[str, str]
    group_color: dict[str, str]
    gpu_marker: dict[int, str]

    @classmethod
    def of(cls, a: StudyAnalysis, by_point: Mapping[str, Sequence[float]]) -> Ctx:
        names = sorted({s for p in a.points for s in series_names(p)})
        groups = sorted({group_name(p.model, p.hardware) for p in a.points})
        dark = mpl.colormaps["Dark2"].colors
        gpus = sorted({p.gpus for p in a.points} | {r.world_size for r, _ in a.runs})
        return cls(
            a,
            by_point,
            {n: f"C{i % 10}" for i, n in enumerate(names)},
            {g: mpl.colors.to_hex(dark[i % len(dark)]) for i, g in enumerate(groups)},
            {g: MARKERS[i % len(MARKERS)] for i, g in enumerate(gpus)},
        )


Draw = Callable[[object, Ctx], None]


def slug(title: str) -> str:
    """File stem of a figure: its title in lower case, words joined by underscores."""
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def series_names(p: PointStats) -> tuple[str, ...]:
    return p.series or (NO_SERIES,)


def new_figure(width_in: float = COLUMN_IN, height_in: float = 3.0) -> Figure:
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=PNG_DPI)
    fig.savefig(paths[1], metadata={"Title": stem.replace("_", " ")})
    return paths


def log2_ticks(ax, values: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted({v for v in values if v > 0})  # a log axis has no place for 0
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        lo, hi = ticks[0], ticks[-1]
        ax.set_xlim(lo / 2**0.3, hi * 2**0.3)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())


def _err(s: Stat | None) -> float:
    return 0.0 if s is None or s.std is None else s.std


def _by_series(c: Ctx) -> dict[str, list[PointStats]]:
    out: dict[str, list[PointStats]] = defaultdict(list)
    for p in c.a.points:
        for name in series_names(p):
            out[name].append(p)
    return {k: sorted(v, key=lambda p: (p.gpus, p.global_batch_size)) for k, v in out.items()}


def _series_metric(ax, c: Ctx, key: str, x: Callable[[PointStats], float]) -> list[float]:
    xs_all: list[float] = []
    for name, pts in sorted(_by_series(c).items()):
        pts = [p for p in pts if p.mean(key) is not None]
        if not pts:
            continue
        xs = [x(p) for p in pts]
        xs_all += xs
        ax.errorbar(
            xs,
            [p.mean(key) for p in pts],
            yerr=[_err(p.metrics.get(key)) for p in pts],
            fmt="o-",
            color=c.series_color[name],
            label=name,
        )
    return xs_all


def energy_vs_gpus(ax, c: Ctx) -> None:
    xs = _series_metric(ax, c, "energy_kwh", lambda p: p.gpus)
    log2_ticks(ax, xs)
    ax.set(xlabel="GPUs", ylabel="energy (kWh)", title="Energy vs GPUs")


def _series_rows(c: Ctx, value: Callable) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for r in c.a.series:
        if value(r)[0] is not None:
            out[r.series].append(r)
    return {k: sorted(v, key=lambda r: r.gpus) for k, v in sorted(out.items())}


def _series_lines(ax, c: Ctx, value: Callable) -> list[int]:
    """value(row) -> (y, yerr) per series row; returns the GPU counts drawn."""
    gpus: list[int] = []
    for name, rows in _series_rows(c, value).items():
        ys = [value(r) for r in rows]
        gpus += [r.gpus for r in rows]
        ax.errorbar(
            [r.gpus for r in rows],
            [y for y, _ in ys],
            yerr=[e or 0.0 for _, e in ys],
            fmt="o-",
            color=c.series_color.get(name, "C0"),
            label=name,
        )
    return gpus


def ratio_panel(metric: str, label: str) -> Draw:
    def draw(ax, c: Ctx) -> None:
        gpus = _series_lines(ax, c, lambda r: (r.ratios.get(metric), r.ratio_std.get(metric)))
        ax.axhline(1.0, color="0.4", ls=":", lw=1)
        log2_ticks(ax, gpus)
        ax.set(xlabel="GPUs", ylabel=f"{label} ratio (1)", title=f"{label} / baseline")

    return draw


def speedup_vs_gpus(ax, c: Ctx) -> None:
    gpus = _series_lines(ax, c, lambda r: (r.speedup, r.speedup_std))
    bases = sorted({r.baseline_gpus for r in c.a.series})
    for base in bases:
        line = np.array(sorted({g for g in gpus if g >= base}))
        if line.size:
            ax.plot(line, line / base, ":", color="0.3", lw=1, label="ideal (linear)")
    log2_ticks(ax, gpus)
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set(xlabel="GPUs", ylabel="speed-up (1)", title="Speed-up vs GPUs")


def parallel_efficiency_vs_gpus(ax, c: Ctx) -> None:
    gpus = _series_lines(ax, c, lambda r: (r.parallel_efficiency, r.parallel_efficiency_std))
    ax.axhline(1.0, color="0.3", ls=":", lw=1, label="ideal (linear)")
    log2_ticks(ax, gpus)
    ax.set_ylim(bottom=0)
    ax.set(xlabel="GPUs", ylabel="parallel efficiency (1)", title="Parallel efficiency vs GPUs")


def accuracy_panels(a: StudyAnalysis) -> list[tuple[str, str]]:
    """(metric, mode) pairs with data: one accuracy panel each, pre-training and fine-tuning
    apart."""
    modes = sorted({p.mode for p in a.points}, key=lambda m: (m != "pretrain", m))
    return [
        (k, m)
        for k in accuracy_keys(a.points) + (["top5_error"] * _has(a, "top5_error"))
        for m in modes
        if any(p.mode == m and p.mean(k) is not None for p in a.points)
    ]


def _has(a: StudyAnalysis, key: str) -> bool:
    return key not in accuracy_keys(a.points) and any(p.mean(key) is not None for p in a.points)


def accuracy_panel(key: str, mode: str) -> Draw:
    def draw(ax, c: Ctx) -> None:
        xs: list[int] = []
        for name, pts in sorted(_by_series(c).items()):
            pts = sorted(
                (
                    p
                    for p in pts
                    if p.mode == mode and p.mean(key) is not None and p.global_batch_size > 0
                ),  # 0: not given (a log axis has no place for it)
                key=lambda p: p.global_batch_size,
            )
            if pts:
                gbs = [p.global_batch_size for p in pts]
                xs += gbs
                ax.errorbar(
                    gbs,
                    [p.mean(key) for p in pts],
                    yerr=[_err(p.metrics.get(key)) for p in pts],
                    fmt="o-" if len(set(gbs)) == len(gbs) else "o",  # no line up a constant GBS
                    color=c.series_color[name],
                    label=name,
                )
        log2_ticks(ax, xs)
        label = ACCURACY_LABELS.get(key, f"{key} ({UNITS.get(key, '1')})")
        ax.set(xlabel="global batch size (samples)", ylabel=label)
        ax.set_title(f"{label.split(' (')[0]}, {MODE_NAMES.get(mode, mode)}")

    return draw


def energy_vs_gpu_hours(ax, c: Ctx) -> None:
    fits = {(f.model, f.hardware): f.fit for f in c.a.energy_fits}
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for run, m in c.a.runs:
        if m["energy_kwh"] is not None and m["gpu_hours"]:
            groups[(run.model, run.hardware)].append((m["gpu_hours"], m["energy_kwh"], run))
    for key, items in sorted(groups.items()):
        color = c.group_color.get(group_name(*key), "k")
        for gpus in sorted({r.world_size for _, _, r in items}):
            sel = [(x, y) for x, y, r in items if r.world_size == gpus]
            ax.scatter(*zip(*sel, strict=True), color=color, marker=c.gpu_marker[gpus], s=14)
        ax.plot([], [], "o", color=color, label=group_name(*key))
        fit = fits.get(key)
        if fit is not None:
            xs = np.linspace(0, max(x for x, _, _ in items) * 1.05, 50)
            ax.plot(xs, fit.slope * xs + fit.intercept, color=color, lw=1, label=fit_label(fit))
    _gpu_key(ax, c, sorted({r.world_size for r, _ in c.a.runs}))
    ax.set(xlabel="GPU-hours (GPU-h)", ylabel="energy (kWh)", title="Energy vs GPU-hours")


def _gpu_key(ax, c: Ctx, gpus: Sequence[int]) -> None:
    """The marker of each GPU count, as a small key inside the axes (colours are series)."""
    if not gpus:
        return
    handles = [
        Line2D([], [], marker=c.gpu_marker[g], color="0.35", ls="", label=str(g)) for g in gpus
    ]
    ax.legend(
        handles=handles,
        title="GPUs",
        loc="upper left",
        ncols=min(len(handles), 4),
        fontsize=6,
        title_fontsize=6,
        handletextpad=0.1,
        columnspacing=0.6,
    )


def time_vs_energy(ax, c: Ctx) -> None:
    pts = [p for p in c.a.points if p.mean("runtime_s") is not None and p.mean("energy_kwh")]
    for p in pts:
        name = series_names(p)[0]
        ax.errorbar(
            p.mean("runtime_s"),
            p.mean("energy_kwh"),
            xerr=_err(p.metrics.get("runtime_s")),
            yerr=_err(p.metrics.get("energy_kwh")),
            fmt=c.gpu_marker.get(p.gpus, "o"),
            color=c.series_color[name],
        )
    _pareto_fronts(ax, c, {p.point_id: p for p in pts})
    for name in sorted({series_names(p)[0] for p in pts}):
        ax.plot([], [], "o", color=c.series_color[name], label=name)
    _gpu_key(ax, c, sorted({p.gpus for p in pts}))
    ax.set(xlabel="runtime (s)", ylabel="energy (kWh)", title="Time vs energy")


def _pareto_fronts(ax, c: Ctx, by_id: Mapping[str, PointStats]) -> None:
    """One dashed front per model and hardware (black where there is one, else the group's
    colour): points of different models do different work, so no front spans them."""
    several = len(c.a.pareto) > 1
    for key, ids in c.a.pareto.items():
        front = [by_id[pid] for pid in ids if pid in by_id]
        if front:
            name = group_name(*key)
            ax.plot(
                [p.mean("runtime_s") for p in front],
                [p.mean("energy_kwh") for p in front],
                "--o",
                color=c.group_color.get(name, "k") if several else "k",
                lw=1,
                ms=9,
                mfc="none",  # a ring around each front point: visible even for a one-point front
                label=f"Pareto front, {name}" if several else "Pareto front",
            )


def power_vs_lbs(ax, c: Ctx) -> None:
    by_group: dict[str, list[PointStats]] = defaultdict(list)
    for p in c.a.points:
        if p.mean("power_per_gpu_w") is not None and p.local_batch_size > 0:  # 0: not given
            by_group[group_name(p.model, p.hardware)].append(p)
    xs: list[int] = []
    for name, pts in sorted(by_group.items()):
        pts.sort(key=lambda p: p.local_batch_size)
        xs += [p.local_batch_size for p in pts]
        ax.errorbar(
            [p.local_batch_size for p in pts],
            [p.mean("power_per_gpu_w") for p in pts],
            yerr=[_err(p.metrics.get("power_per_gpu_w")) for p in pts],
            fmt="o",
            color=c.group_color[name],
            label=name,
        )
    log2_ticks(ax, xs)
    ax.set(xlabel="local batch size (samples)", ylabel="mean power per GPU (W)")
    ax.set_title("Mean power per GPU vs LBS")


def step_energy_distribution(ax, c: Ctx) -> None:
    order = {p.point_id: p for p in c.a.points}
    items = [(pid, list(v)) for pid, v in c.by_point.items() if len(v) and pid in order]
    if not items:
        ax.text(0.5, 0.5, "no step energies recorded", ha="center", transform=ax.transAxes)
    else:
        box = ax.boxplot(
            [v for _, v in items], showfliers=False, patch_artist=True, medianprops={"color": "k"}
        )
        names = [series_names(order[pid])[0] for pid, _ in items]
        for patch, name in zip(box["boxes"], names, strict=True):
            patch.set_facecolor(c.series_color[name])
            patch.set_alpha(0.6)
        for name in sorted(set(names)):
            ax.plot([], [], "s", color=c.series_color[name], alpha=0.6, label=name)
        ax.set_xticks(range(1, len(items) + 1), [pid for pid, _ in items], rotation=45, ha="right")
    ax.set(xlabel="point", ylabel="job energy per step (J)", title="Step-energy distribution")
