"""The study report's figures as PNG files (matplotlib's object API on the Agg canvas: no pyplot
global state, no display needed)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from collector.analysis import StudyAnalysis, accuracy_key

DPI = 110


def _figure() -> tuple[Figure, object]:
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def energy_vs_gpu_hours(a: StudyAnalysis, path: Path) -> Path:
    fig, ax = _figure()
    groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for run, m in a.runs:
        if m["energy_kwh"] is not None:
            groups[(run.model, run.hardware)].append((m["gpu_hours"], m["energy_kwh"]))
    fits = {(f.model, f.hardware): f.fit for f in a.energy_fits if f.fit is not None}
    for i, (key, xy) in enumerate(sorted(groups.items())):
        color = f"C{i % 10}"
        xs, ys = zip(*xy, strict=True)
        ax.scatter(xs, ys, color=color, s=18, label=f"{key[0]} on {key[1] or 'unknown'}")
        fit = fits.get(key)
        if fit is not None:
            line = np.linspace(0, max(xs) * 1.05, 50)
            r2 = "n/a" if fit.r2 is None else f"{fit.r2:.3f}"
            ax.plot(
                line,
                fit.slope * line + fit.intercept,
                color=color,
                lw=1,
                label=f"fit: {fit.slope:.4g} kWh/GPU-h, R² {r2}",
            )
    ax.set(xlabel="GPU-hours", ylabel="energy (kWh)", title="Energy vs GPU-hours")
    _legend(ax)
    return _save(fig, path)


def speedup_vs_gpus(a: StudyAnalysis, path: Path) -> Path:
    fig, ax = _figure()
    by_series: dict[str, list] = defaultdict(list)
    for row in a.series:
        if row.speedup is not None:
            by_series[f"{row.series} ({row.scaling})"].append(row)
    for i, (name, rows) in enumerate(sorted(by_series.items())):
        rows.sort(key=lambda r: r.gpus)
        ax.plot(
            [r.gpus for r in rows],
            [r.speedup for r in rows],
            "o-",
            color=f"C{i % 10}",
            ms=4,
            label=name,
        )
        base = rows[0].baseline_gpus
        ideal = np.array(sorted({r.gpus for r in rows}))
        ax.plot(ideal, ideal / base, ":", color=f"C{i % 10}", lw=1)
    ax.plot([], [], ":", color="grey", label="ideal (linear)")
    ax.set(xlabel="GPUs", ylabel="speed-up (throughput / baseline)", title="Speed-up vs GPUs")
    _legend(ax)
    return _save(fig, path)


def power_vs_lbs(a: StudyAnalysis, path: Path) -> Path:
    fig, ax = _figure()
    by_model: dict[str, list] = defaultdict(list)
    for p in a.points:
        s = p.metrics.get("power_per_gpu_w")
        if s is not None and s.mean is not None:
            by_model[f"{p.model} on {p.hardware or 'unknown'}"].append((p.local_batch_size, s))
    for i, (name, items) in enumerate(sorted(by_model.items())):
        items.sort(key=lambda t: t[0])
        ax.errorbar(
            [x for x, _ in items],
            [s.mean for _, s in items],
            yerr=[s.std for _, s in items],
            fmt="o",
            color=f"C{i % 10}",
            capsize=3,
            label=name,
        )
    ax.set(
        xlabel="local batch size",
        ylabel="mean power per GPU (W)",
        title="Mean power per GPU vs LBS",
    )
    ax.set_xscale("log", base=2)
    _legend(ax)
    return _save(fig, path)


def accuracy_vs_gbs(a: StudyAnalysis, path: Path) -> Path:
    fig, ax = _figure()
    key = accuracy_key(a.points)
    by_model: dict[str, list] = defaultdict(list)
    for p in a.points:
        s = p.metrics.get(key) if key else None
        if s is not None and s.mean is not None:
            by_model[p.model].append((p.global_batch_size, p.gpus, s))
    for i, (model, items) in enumerate(sorted(by_model.items())):
        items.sort(key=lambda t: (t[0], t[1]))
        ax.errorbar(
            [g for g, _, _ in items],
            [s.mean for _, _, s in items],
            yerr=[s.std for _, _, s in items],
            fmt="o",
            color=f"C{i % 10}",
            capsize=3,
            label=model,
        )
    ax.set(
        xlabel="global batch size",
        ylabel=key or "accuracy (none reported)",
        title=f"Final {key or 'accuracy'} vs GBS",
    )
    ax.set_xscale("log", base=2)
    _legend(ax)
    return _save(fig, path)


def step_energy_distribution(by_point: Mapping[str, Sequence[float]], path: Path) -> Path:
    fig, ax = _figure()
    items = [(pid, vals) for pid, vals in by_point.items() if len(vals)]
    if items:
        ax.boxplot([list(v) for _, v in items], showfliers=False)
        ax.set_xticks(
            range(1, len(items) + 1), [pid for pid, _ in items], rotation=45, ha="right", fontsize=7
        )
    else:
        ax.text(0.5, 0.5, "no step energies recorded", ha="center", transform=ax.transAxes)
    ax.set(ylabel="job energy per step (J)", title="Step-energy distribution per point")
    return _save(fig, path)


def time_vs_energy(a: StudyAnalysis, path: Path) -> Path:
    fig, ax = _figure()
    pts = [
        p for p in a.points if p.mean("runtime_s") is not None and p.mean("energy_kwh") is not None
    ]
    ax.scatter(
        [p.mean("runtime_s") for p in pts],
        [p.mean("energy_kwh") for p in pts],
        s=18,
        color="C0",
        label="points (mean over repeats)",
    )
    for p in pts:
        ax.annotate(
            p.point_id,
            (p.mean("runtime_s"), p.mean("energy_kwh")),
            fontsize=6,
            xytext=(3, 3),
            textcoords="offset points",
        )
    by_id = {p.point_id: p for p in pts}
    front = [by_id[pid] for pid in a.pareto if pid in by_id]
    if front:
        ax.plot(
            [p.mean("runtime_s") for p in front],
            [p.mean("energy_kwh") for p in front],
            "s-",
            color="C3",
            ms=5,
            label="Pareto front",
        )
    ax.set(xlabel="runtime (s)", ylabel="energy (kWh)", title="Time vs energy")
    _legend(ax)
    return _save(fig, path)


def all_plots(
    a: StudyAnalysis, by_point: Mapping[str, Sequence[float]], out_dir: Path
) -> list[tuple[str, Path]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        ("Energy vs GPU-hours", energy_vs_gpu_hours(a, out_dir / "energy_vs_gpu_hours.png")),
        ("Speed-up vs GPUs", speedup_vs_gpus(a, out_dir / "speedup_vs_gpus.png")),
        ("Mean power per GPU vs LBS", power_vs_lbs(a, out_dir / "power_vs_lbs.png")),
        ("Accuracy vs GBS", accuracy_vs_gbs(a, out_dir / "accuracy_vs_gbs.png")),
        (
            "Step-energy distribution",
            step_energy_distribution(by_point, out_dir / "step_energy.png"),
        ),
        ("Time vs energy", time_vs_energy(a, out_dir / "time_vs_energy.png")),
    ]


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
