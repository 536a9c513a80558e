"""Job-level mean energy per step over an epoch, with a 95 % confidence interval (pure core).

A step shorter than a few counter updates cannot be measured alone (its uncertainty_j is tens
of percent at 50 ms), but the mean over an epoch's steps can: the steps' energies come from
one counter-anchored curve E(t), so their sum is the counter's own difference wherever steps
follow each other, and what individual steps get wrong at their bounds largely cancels. The
interval combines
- measurement: the steps' 95 % half-widths added in quadrature (independent errors; an upper
  bound where neighbouring steps share a bound, whose errors cancel), over the step count;
- spread: Student's t (95 %) x the sample standard deviation of the step energies / sqrt(n),
  how well n steps pin down the job's typical step (the steps differ: data, all-reduce waits).
Input: collector.queries.JobStep rows (every rank's interval of a step summed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

# Student's t, 97.5 % quantile, by degrees of freedom (1..30); 1.96 beyond.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


@dataclass(frozen=True)
class EpochStepStats:
    epoch: int
    steps: int  # steps with energy
    mean_energy_j: float
    ci95_j: float  # half-width: sqrt(measurement^2 + spread^2)
    measurement_j: float
    spread_j: float
    mean_duration_s: float
    single_step_pct: float  # median 95 % half-width of one step alone, % (for contrast)


def t975(dof: int) -> float:
    return _T975[dof - 1] if 1 <= dof <= len(_T975) else 1.96


def epoch_step_stats(steps: Iterable) -> list[EpochStepStats]:
    """Per epoch, from JobStep-like rows (epoch, energy_j, uncertainty_j, duration_s)."""
    by_epoch: dict[int, list] = {}
    for s in steps:
        if s.energy_j is not None:
            by_epoch.setdefault(s.epoch, []).append(s)
    out = []
    for epoch in sorted(by_epoch):
        rows = by_epoch[epoch]
        n = len(rows)
        energies = [s.energy_j for s in rows]
        mean = sum(energies) / n
        measurement = math.sqrt(sum((s.uncertainty_j or 0.0) ** 2 for s in rows)) / n
        spread = 0.0
        if n > 1:
            sd = math.sqrt(sum((e - mean) ** 2 for e in energies) / (n - 1))
            spread = t975(n - 1) * sd / math.sqrt(n)
        rel = sorted((s.uncertainty_j or 0.0) / abs(s.energy_j) for s in rows if s.energy_j)
        out.append(EpochStepStats(
            epoch, n, mean, math.hypot(measurement, spread), measurement, spread,
            sum(s.duration_s for s in rows) / n, 100 * rel[len(rel) // 2] if rel else 0.0,
        ))  # fmt: skip
    return out
