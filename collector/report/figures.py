"""The report's figure catalogue: titles, file names (the title's slug), captions, and the
combined multi-panel overview after the study's main figure. Drawing itself is in `plots.py`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl

from collector.report import plots as P
from collector.report.analysis import StudyAnalysis

STATS = (
    "Markers: mean over repeats; error bars: ± one sample standard deviation (n − 1 in the "
    "denominator; none for a single run)."
)
RATIOS = (
    "Ratios are of means; their error bars propagate both means' standard deviations to first "
    "order (the baseline's own is 0)."
)


@dataclass(frozen=True)
class Rendered:
    title: str
    caption: str
    files: list[Path]  # PNG then PDF

    @property
    def png(self) -> Path:
        return self.files[0]


def _single(c: P.Ctx, out: Path, title: str, caption: str, draw: P.Draw, legend=True) -> Rendered:
    fig = P.new_figure()
    ax = fig.add_subplot()
    draw(ax, c)
    ax.set_title(title)
    if legend:
        _legend(fig, [ax])
    return Rendered(title, caption, P.save(fig, out, P.slug(title)))


def _panels(
    c: P.Ctx,
    out: Path,
    title: str,
    caption: str,
    draws: Sequence[P.Draw],
    ncols: int = 3,
    letters: bool = False,
) -> Rendered:
    nrows = -(-len(draws) // ncols)
    cols = min(ncols, len(draws))
    fig = P.new_figure(P.COLUMN_IN * cols * 0.62 + 0.6, 2.3 * nrows + 0.5)
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for i, (ax, draw) in enumerate(zip(axes, draws, strict=False)):
        draw(ax, c)
        if letters:
            ax.set_title(f"({chr(ord('a') + i)}) {ax.get_title()}")
    for ax in axes[len(draws) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=9)
    _legend(fig, axes[: len(draws)])
    return Rendered(title, caption, P.save(fig, out, P.slug(title)))


def _legend(fig, axes) -> None:
    """One legend for the figure, below the panels (series are coloured alike in every panel)."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        # as many columns as the widest label allows (6.5 pt font: ~3.7 pt a character)
        per_col_pt = 3.7 * max(map(len, seen)) + 30
        ncols = max(1, min(len(seen), int(fig.get_figwidth() * 72 // per_col_pt)))
        fig.legend(seen.values(), seen.keys(), loc="outside lower center", ncols=ncols)


def render_all(
    a: StudyAnalysis, by_point: Mapping[str, Sequence[float]], out: Path
) -> list[Rendered]:
    out.mkdir(parents=True, exist_ok=True)
    with mpl.rc_context(P.STYLE):  # fonts and lines are read when each artist is made
        return _render(a, by_point, out)


def _render(a: StudyAnalysis, by_point: Mapping[str, Sequence[float]], out: Path) -> list[Rendered]:
    c = P.Ctx.of(a, by_point)
    figs = [
        _single(c, out, "Energy vs GPUs", f"Total energy (GPUs + CPU + DRAM where measured) per "
                f"series. {STATS}", P.energy_vs_gpus),
        _panels(c, out, "Efficiency ratios vs GPUs",
                "Energy, runtime and GPU-hours of each point over the series' baseline, its "
                "smallest GPU count with completed runs (the study's efficiency ratios; dotted: "
                f"1). {RATIOS}",
                [P.ratio_panel("energy_kwh", "energy"), P.ratio_panel("runtime_s", "runtime"),
                 P.ratio_panel("gpu_hours", "GPU-hours")]),
        _single(c, out, "Speed-up vs GPUs", "Throughput (samples/s) over the series' baseline "
                f"(its smallest GPU count with completed runs); dotted: ideal linear speed-up. "
                f"{RATIOS}", P.speedup_vs_gpus),
        _single(c, out, "Parallel efficiency vs GPUs", "Speed-up / (GPUs / baseline GPUs); "
                f"dotted: ideal. {RATIOS}", P.parallel_efficiency_vs_gpus),
    ]  # fmt: skip
    acc = P.accuracy_panels(a)
    if acc:
        figs.append(
            _panels(
                c,
                out,
                "Accuracy vs GBS",
                "Final evaluation after the last epoch; pre-training and fine-tuning in separate "
                f"panels. RMSE is in units of each channel's standard deviation. {STATS}",
                [P.accuracy_panel(k, m) for k, m in acc],
                ncols=min(3, len(acc)),
            )
        )
    figs += [
        _single(c, out, "Energy vs GPU-hours", "Every completed run (colour: model and hardware; "
                "marker: GPU count) and the least-squares line per model and hardware, with the "
                "slope's 95 % confidence interval (Student t, n − 2 d.o.f.) and R².",
                P.energy_vs_gpu_hours),
        _single(c, out, "Time vs energy", "Points (colour: series; marker: GPU count) with "
                "the runtime-energy Pareto front of each model and hardware (dashed). "
                f"{STATS}", P.time_vs_energy),
        _single(c, out, "Mean power per GPU vs LBS", f"GPU energy / runtime / GPUs. {STATS}",
                P.power_vs_lbs),
        _single(c, out, "Step-energy distribution", "Job-level energy per optimizer step, pooled "
                "over each point's repeats (colour: series): box = quartiles, line = median, "
                "whiskers = 1.5 IQR.",
                P.step_energy_distribution),
    ]  # fmt: skip
    overview = [P.energy_vs_gpus, P.speedup_vs_gpus, P.parallel_efficiency_vs_gpus]
    overview += [P.energy_vs_gpu_hours, P.time_vs_energy]
    overview.append(P.accuracy_panel(*acc[0]) if acc else P.ratio_panel("energy_kwh", "energy"))
    figs.insert(
        0,
        _panels(
            c,
            out,
            "Scaling study overview",
            "(a) energy, (b) speed-up and (c) parallel efficiency vs GPUs; (d) energy vs "
            "GPU-hours with the fit; (e) time vs energy with the Pareto fronts; (f) accuracy vs "
            f"GBS. {STATS}",
            overview,
            letters=True,
        ),
    )
    return figs
