"""Fits, fronts and distributions of the scaling-study analysis (pure; numpy arithmetic).

- energy against GPU-hours per (model, hardware): a least-squares line over the completed runs,
  slope in kWh per GPU-hour, with R² and the slope's 95 % confidence interval (Student t with
  n - 2 degrees of freedom on scipy's standard error: the textbook interval, not hand-rolled); and how that per-run factor goes with samples and gradient
  updates per GPU-hour (the study's explanation of why it differs between models and hardware);
- the runtime-energy Pareto front of the points, one per (model, hardware): points of different
  models do different work, so a FourCastNet point "dominating" a ResNet50 one says nothing;
- the distribution (mean, median, 5th / 95th percentiles) of per-step energies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from collector.summary import RunSummary

if TYPE_CHECKING:
    from collector.report.points import PointStats


@dataclass(frozen=True)
class LinearFit:
    x: str
    y: str
    slope: float
    intercept: float
    r2: float | None  # None where y does not vary
    n: int
    slope_ci95: tuple[float, float] | None = None  # None for n < 3 (no residual degree of freedom)


@dataclass(frozen=True)
class EnergyFit:
    """Energy vs GPU-hours for one model on one hardware, and what its slope goes with."""

    model: str
    hardware: str
    fit: LinearFit | None  # energy_kwh = slope x gpu_hours + intercept (None: one GPU-h value)
    samples_per_gpu_hour: float
    updates_per_gpu_hour: float
    vs_samples: LinearFit | None  # kwh_per_gpu_hour against samples_per_gpu_hour, per run
    vs_updates: LinearFit | None  # kwh_per_gpu_hour against updates_per_gpu_hour, per run


@dataclass(frozen=True)
class Distribution:
    n: int
    mean: float
    median: float
    p05: float
    p95: float


def linear_fit(
    xs: Sequence[float], ys: Sequence[float], x: str = "x", y: str = "y"
) -> LinearFit | None:
    """Least-squares line y = slope x + intercept; None for fewer than two distinct x."""
    xa, ya = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if xa.size < 2 or np.ptp(xa) == 0:
        return None
    design = np.column_stack([xa, np.ones_like(xa)])
    (slope, intercept), *_ = np.linalg.lstsq(design, ya, rcond=None)
    ss_res = float(np.sum((ya - (slope * xa + intercept)) ** 2))
    ss_tot = float(np.sum((ya - ya.mean()) ** 2))
    # y constant (up to rounding): R² is undefined, not a wild number from 0/0-ish division.
    flat = ss_tot <= 1e-24 * max(float(np.sum(ya**2)), 1e-300)
    r2 = None if flat else 1.0 - ss_res / ss_tot
    ci = slope_ci95(xa, ya) if xa.size > 2 else None
    return LinearFit(x, y, float(slope), float(intercept), r2, int(xa.size), ci)


def slope_ci95(xa: np.ndarray, ya: np.ndarray) -> tuple[float, float]:
    """slope ± t(0.975, n-2) x its standard error (ordinary least squares, normal residuals)."""
    from scipy import stats  # only the report pays for importing scipy

    res = stats.linregress(xa, ya)
    half = float(stats.t.ppf(0.975, xa.size - 2)) * float(res.stderr)
    return float(res.slope) - half, float(res.slope) + half


def energy_fits(done: Sequence[tuple[RunSummary, Mapping[str, float | None]]]) -> list[EnergyFit]:
    groups: dict[tuple[str, str], list[Mapping[str, float | None]]] = defaultdict(list)
    for run, m in done:
        if m["energy_kwh"] is not None and m["gpu_hours"]:
            groups[(run.model, run.hardware)].append(m)
    out = []
    for (model, hardware), ms in sorted(groups.items()):
        fit = linear_fit(
            [m["gpu_hours"] for m in ms], [m["energy_kwh"] for m in ms], "gpu_hours", "energy_kwh"
        )
        power = [m["kwh_per_gpu_hour"] for m in ms]
        spg = [m["samples_per_gpu_hour"] for m in ms]
        upg = [m["updates_per_gpu_hour"] for m in ms]
        out.append(
            EnergyFit(
                model=model,
                hardware=hardware,
                fit=fit,
                samples_per_gpu_hour=float(np.mean(spg)),
                updates_per_gpu_hour=float(np.mean(upg)),
                vs_samples=linear_fit(spg, power, "samples_per_gpu_hour", "kwh_per_gpu_hour"),
                vs_updates=linear_fit(upg, power, "updates_per_gpu_hour", "kwh_per_gpu_hour"),
            )
        )
    return out


def pareto_front(points: Sequence[PointStats]) -> list[str]:
    """Points no other point beats on both runtime and energy (means), fastest first."""
    cand = [
        (p.mean("runtime_s"), p.mean("energy_kwh"), p.point_id)
        for p in points
        if p.mean("runtime_s") is not None and p.mean("energy_kwh") is not None
    ]
    front = [
        (t, e, pid)
        for t, e, pid in cand
        if not any(t2 <= t and e2 <= e and (t2 < t or e2 < e) for t2, e2, _ in cand)
    ]
    return [pid for _, _, pid in sorted(front)]


def pareto_fronts(points: Sequence[PointStats]) -> dict[tuple[str, str], list[str]]:
    """{(model, hardware): its points' Pareto front}, groups sorted, only those with a front.
    Fine-tuning is other work than pre-training the same model: its points are a group of
    their own, named "MODEL (finetune)"."""
    groups: dict[tuple[str, str], list[PointStats]] = defaultdict(list)
    for p in points:
        model = p.model if p.mode == "pretrain" else f"{p.model} ({p.mode})"
        groups[(model, p.hardware)].append(p)
    fronts = {key: pareto_front(pts) for key, pts in sorted(groups.items())}
    return {key: front for key, front in fronts.items() if front}


def distribution(values: Sequence[float]) -> Distribution | None:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return None
    p05, med, p95 = np.percentile(arr, [5, 50, 95])
    return Distribution(int(arr.size), float(arr.mean()), float(med), float(p05), float(p95))
