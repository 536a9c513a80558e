"""The scaling study's analysis (Huber et al., arXiv:2508.07706), on plain RunSummary records.

Pure: records in, dataclasses out; numpy for the arithmetic. Definitions follow the study's code:
- energy = node energy (GPUs + CPU packages + DRAM) in kWh, GPU-hours = runtime x GPUs;
- repeats: mean and the sample standard deviation (ddof=1, n-1 in the denominator; none for a
  single run) over the completed runs of a point;
- efficiency ratios: every metric of a point over its value at the series' baseline, its smallest
  GPU count with completed runs (a point whose runs all failed has no means to divide by; it
  stays in the series without ratios instead of taking the whole series' ratios with it);
  speed-up = throughput over the baseline's, parallel efficiency = speed-up / (GPUs / baseline
  GPUs), where a point's throughput is pooled over its repeats (their samples over their
  runtime, not the mean of per-run rates: the mean of 1/T is not 1/(mean T), and with scattered
  repeats the two told a faster point from a slower one). For strong scaling (same samples)
  that is T0/T and T0*n0/(T*n) of the mean runtimes, the inverse of the runtime ratio; for weak
  scaling (samples grow with GPUs) the efficiency is T0/T, as usual. A ratio's spread is the
  first-order propagation of both means' standard deviations (the baseline's own is 0; for the
  speed-up, the per-run throughputs' relative spread);
- a least-squares line of energy against GPU-hours per (model, hardware), with R², and the
  runtime-energy Pareto front per (model, hardware) (`fits.py`);
- a point carries the union of its completed runs' energy flags (incomplete coverage, gaps,
  counter resets, source disagreement, a rank still open), so no figure hides a doubtful run.
Sweep tags (set by `trainer sweep`): sweep, point, repeat, series and scaling (comma-separated,
one scaling per series, since a point may belong to several series) and mode (pretrain |
finetune; absent means pretrain).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from collector.report.fits import (
    Distribution,
    EnergyFit,
    LinearFit,
    distribution,
    energy_fits,
    linear_fit,
    pareto_front,
    pareto_fronts,
)
from collector.report.points import PointStats, Stat, stat
from collector.summary import RunSummary

__all__ = [
    "Distribution", "EnergyFit", "LinearFit", "PointStats", "SeriesPoint", "Stat",
    "StudyAnalysis", "accuracy_key", "accuracy_keys", "analyze", "distribution", "energy_fits", "final_accuracy",
    "linear_fit", "pareto_front", "pareto_fronts", "point_id_of", "run_metrics", "series_of",
    "series_rows", "stat", "step_energy_by_point",
]  # fmt: skip

J_PER_KWH = 3.6e6
RUN_METRICS = (
    "energy_kwh", "active_energy_kwh", "gpu_energy_kwh", "energy_per_node_kwh", "runtime_s",
    "gpu_hours", "samples", "steps", "kwh_per_gpu_hour", "samples_per_gpu_hour",
    "updates_per_gpu_hour", "j_per_sample", "power_per_gpu_w", "throughput_samples_per_s",
    "start_temperature_c",  # mean over the run's GPUs when it started (thermal fairness)
)  # fmt: skip
_PER_CHANNEL = re.compile(r"_c\d+$")  # FourCastNet's per-channel RMSE/ACC: the CSV has the means
# Final-accuracy keys, best first: the first one present is "the" accuracy of a report.
ACCURACY_KEYS = ("top1_error", "rmse", "acc", "top5_error", "loss")
STUDY_ACCURACY = ("top1_error", "rmse", "acc")  # the report's accuracy columns, where present
# Units of the metrics (tidy CSV, axis labels). FourCastNet's RMSE is the channel mean of the
# normalised fields, i.e. in units of each channel's standard deviation (sigma).
UNITS = {
    "energy_kwh": "kWh", "active_energy_kwh": "kWh", "gpu_energy_kwh": "kWh",
    "energy_per_node_kwh": "kWh", "runtime_s": "s", "gpu_hours": "GPU-h", "samples": "samples",
    "steps": "steps", "kwh_per_gpu_hour": "kWh/GPU-h", "samples_per_gpu_hour": "samples/GPU-h",
    "updates_per_gpu_hour": "updates/GPU-h", "j_per_sample": "J/sample", "power_per_gpu_w": "W",
    "throughput_samples_per_s": "samples/s", "start_temperature_c": "°C", "top1_error": "%",
    "top5_error": "%", "rmse": "σ (normalised)", "acc": "1", "loss": "1",
}  # fmt: skip


@dataclass(frozen=True)
class SeriesPoint:
    series: str
    scaling: str
    point_id: str
    gpus: int
    baseline_point: str
    baseline_gpus: int
    ratios: dict[str, float | None]  # metric / baseline metric (means)
    speedup: float | None
    parallel_efficiency: float | None
    ratio_std: dict[str, float | None] = field(default_factory=dict)  # propagated spread
    speedup_std: float | None = None
    parallel_efficiency_std: float | None = None


@dataclass(frozen=True)
class StudyAnalysis:
    points: list[PointStats]
    series: list[SeriesPoint]
    energy_fits: list[EnergyFit]
    # (model, hardware) -> point ids on its runtime-energy Pareto front, fastest first
    pareto: dict[tuple[str, str], list[str]]
    runs: list[tuple[RunSummary, dict[str, float | None]]]  # completed runs and their metrics
    # every run of the sweep, any status, with what is known of its metrics (so the runs the
    # statistics leave out can be named, not only counted)
    all_runs: list[tuple[RunSummary, dict[str, float | None]]] = field(default_factory=list)

    @property
    def left_out(self) -> list[RunSummary]:
        """The runs not completed (failed, interrupted, still running): in no statistic."""
        return [r for r, _ in self.all_runs if r.status != "completed"]


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def run_metrics(run: RunSummary) -> dict[str, float | None]:
    # node energy, or nothing: GPU-only energy in its place would undercount every CPU and
    # DRAM joule (queries: a CPU or DRAM interval without energy leaves energy_j None)
    kwh = _div(run.energy_j, J_PER_KWH)
    gpu_h = run.gpu_hours or None
    temps = list(run.start_temperature_c.values())
    out: dict[str, float | None] = {
        "energy_kwh": kwh,
        "active_energy_kwh": _div(run.active_energy_j, J_PER_KWH),
        "gpu_energy_kwh": _div(run.gpu_energy_j, J_PER_KWH),
        "energy_per_node_kwh": _div(kwh, run.nodes),
        "runtime_s": run.duration_s,
        "gpu_hours": run.gpu_hours,
        "samples": float(run.samples),
        "steps": float(run.steps),
        "kwh_per_gpu_hour": _div(kwh, gpu_h),
        "samples_per_gpu_hour": _div(float(run.samples), gpu_h),
        "updates_per_gpu_hour": _div(float(run.steps), gpu_h),
        "j_per_sample": _div(run.energy_j, run.samples),
        "power_per_gpu_w": _div(_div(run.gpu_energy_j, run.duration_s), run.world_size),
        "throughput_samples_per_s": _div(float(run.samples), run.duration_s),
        "start_temperature_c": _div(sum(temps), len(temps)),
    }
    out.update(final_accuracy(run.final_metrics))
    return out


def final_accuracy(final: Mapping[str, float]) -> dict[str, float]:
    """The study's accuracy metrics from a run's final metrics, plus the trainer's eval_* keys.

    The trainer reports eval_top1/eval_top5 as fractions correct; the study quotes top-1/top-5
    error in percent. FourCastNet's eval_rmse_mean / eval_acc_mean become rmse / acc.
    """
    final = _plausible(final)
    out = {
        k: float(v)
        for k, v in final.items()
        if k.startswith(("eval_", "train_loss")) and not _PER_CHANNEL.search(k)
    }
    out.update({k: float(v) for k, v in final.items() if k in ACCURACY_KEYS})
    for src, dst in (("eval_top1", "top1_error"), ("eval_top5", "top5_error")):
        if src in final and dst not in out and 0.0 <= float(final[src]) <= 1.0:
            out[dst] = 100.0 * (1.0 - float(final[src]))
    for src, dst in (("eval_rmse_mean", "rmse"), ("eval_acc_mean", "acc"), ("eval_loss", "loss")):
        if src in final and dst not in out:
            out[dst] = float(final[src])
    return out


def _plausible(final: Mapping[str, float]) -> dict[str, float]:
    """The final metrics that are finite numbers: a sender's inf, NaN or 1.8e308 would print as
    -inf or poison a mean (a fraction correct outside [0, 1] gives no error column either)."""
    out = {}
    for k, v in final.items():
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x) and abs(x) < 1e300:
            out[k] = x
    return out


def _implausible(final: Mapping[str, float]) -> bool:
    """True when a run's final metrics hold a value the report leaves out (_plausible, or a
    fraction correct outside [0, 1]): its point says so (flag metric_left_out)."""
    kept = _plausible(final)
    if len(kept) < len(final):
        return True
    return any(not 0.0 <= kept[k] <= 1.0 for k in ("eval_top1", "eval_top5") if k in kept)


def point_id_of(run: RunSummary) -> str:
    return run.tags.get("point") or (
        f"g{run.world_size}-l{run.local_batch_size}-b{run.global_batch_size}"
    )


def series_of(run: RunSummary) -> list[tuple[str, str]]:
    names = [s for s in run.tags.get("series", "").split(",") if s]
    kinds = [s for s in run.tags.get("scaling", "").split(",") if s]
    kinds += ["strong"] * (len(names) - len(kinds))
    return list(zip(names, kinds, strict=False))


def accuracy_key(points: Sequence[PointStats]) -> str | None:
    present = {k for p in points for k, s in p.metrics.items() if s.n}
    return next((k for k in ACCURACY_KEYS if k in present), None)


def accuracy_keys(points: Sequence[PointStats]) -> list[str]:
    """The study's accuracy columns present: top-1 error (ResNet50), RMSE and ACC (FourCastNet);
    else the headline key (a loss, say)."""
    present = {k for p in points for k, s in p.metrics.items() if s.n}
    keys = [k for k in STUDY_ACCURACY if k in present]
    key = accuracy_key(points)
    return keys or ([key] if key else [])


def analyze(runs: Iterable[RunSummary]) -> StudyAnalysis:
    runs = list(runs)
    by_point: dict[str, list[RunSummary]] = defaultdict(list)
    for run in runs:
        by_point[point_id_of(run)].append(run)
    points = [_point(pid, rs) for pid, rs in by_point.items()]
    points.sort(key=lambda p: (p.model, p.global_batch_size, p.gpus, p.point_id))
    every = [(r, run_metrics(r)) for r in runs]
    done = [(r, m) for r, m in every if r.status == "completed"]
    return StudyAnalysis(
        points=points,
        series=series_rows(points),
        energy_fits=energy_fits(done),
        pareto=pareto_fronts(points),
        runs=done,
        all_runs=every,
    )


def _point(pid: str, runs: list[RunSummary]) -> PointStats:
    done = [r for r in runs if r.status == "completed"]
    first = (done or runs)[0]
    per_run = [run_metrics(r) for r in done]
    names = list(RUN_METRICS) + sorted({k for m in per_run for k in m} - set(RUN_METRICS))
    pairs = series_of(first)
    return PointStats(
        point_id=pid,
        model=first.model,
        hardware=first.hardware,
        mode=first.tags.get("mode") or "pretrain",
        gpus=first.world_size,
        nodes=first.nodes,
        local_batch_size=first.local_batch_size,
        global_batch_size=first.global_batch_size,
        series=tuple(s for s, _ in pairs),
        scaling=tuple(k for _, k in pairs),
        run_ids=tuple(r.run_id for r in done),
        not_completed=len(runs) - len(done),
        metrics={n: stat(m.get(n) for m in per_run) for n in names},
        flags=frozenset().union(*(r.flags for r in done))
        | ({"metric_left_out"} if any(_implausible(r.final_metrics) for r in done) else set()),
    )


def series_rows(points: Sequence[PointStats]) -> list[SeriesPoint]:
    members: dict[tuple[str, str], list[PointStats]] = defaultdict(list)
    for p in points:
        for name, kind in zip(p.series, p.scaling, strict=True):
            members[(name, kind)].append(p)
    rows = []
    for (name, kind), pts in sorted(members.items()):
        pts = sorted(pts, key=lambda p: (p.gpus, p.point_id))
        base = _baseline(pts)
        for p in pts:
            speedup = _div(_pooled_rate(p), _pooled_rate(base))
            spread = {k: _ratio_std(p, base, k) for k in p.metrics}
            tp = "throughput_samples_per_s"  # its relative spread is the speed-up's
            rel = _div(_ratio_std(p, base, tp), _div(p.mean(tp), base.mean(tp)))
            speedup_std = None if rel is None or speedup is None else speedup * rel
            rows.append(
                SeriesPoint(
                    series=name,
                    scaling=kind,
                    point_id=p.point_id,
                    gpus=p.gpus,
                    baseline_point=base.point_id,
                    baseline_gpus=base.gpus,
                    ratios={k: _div(p.mean(k), base.mean(k)) for k in p.metrics},
                    speedup=speedup,
                    parallel_efficiency=_div(speedup, p.gpus / base.gpus),
                    ratio_std=spread,
                    speedup_std=speedup_std,
                    parallel_efficiency_std=_div(speedup_std, p.gpus / base.gpus),
                )
            )
    return rows


def _baseline(pts: Sequence[PointStats]) -> PointStats:
    """The first of `pts` (sorted by GPUs) with completed runs: a smallest-GPU point whose runs
    all failed has no means to divide by and must not take every ratio of its series with it.
    Where no point completed, the first (its series then has no ratios at all)."""
    return next((p for p in pts if p.run_ids), pts[0])


def _pooled_rate(p: PointStats) -> float | None:
    """Samples per second over all the point's completed runs together."""
    return _div(p.mean("samples"), p.mean("runtime_s"))


def _ratio_std(p: PointStats, base: PointStats, key: str) -> float | None:
    """Spread of mean_p / mean_base: first-order propagation of both relative std's."""
    if p is base:
        return None if p.mean(key) is None else 0.0
    a, b = p.metrics.get(key), base.metrics.get(key)
    if a is None or b is None or not a.mean or not b.mean:
        return None
    if a.std is None and b.std is None:
        return None
    rel = ((a.std or 0.0) / a.mean) ** 2 + ((b.std or 0.0) / b.mean) ** 2
    return abs(a.mean / b.mean) * float(np.sqrt(rel))


def step_energy_by_point(
    points: Sequence[PointStats], step_energy_j: Mapping[str, Sequence[float]]
) -> dict[str, list[float]]:
    """Pools the job-level step energies (J, per run id) of each point's completed runs."""
    return {
        p.point_id: [e for rid in p.run_ids for e in step_energy_j.get(rid, ())] for p in points
    }
