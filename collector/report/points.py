"""A study point's statistics over its repeats: Stat (mean, sample std, n), stat() and PointStats.

Pure: numpy only. Shared by analysis.py and fits.py (so neither imports the other's module for
them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Stat:
    mean: float | None
    std: float | None
    n: int


@dataclass(frozen=True)
class PointStats:
    point_id: str
    model: str
    hardware: str
    mode: str  # pretrain | finetune
    gpus: int
    nodes: int
    local_batch_size: int
    global_batch_size: int
    series: tuple[str, ...]
    scaling: tuple[str, ...]
    run_ids: tuple[str, ...]  # the completed runs the statistics use
    not_completed: int  # failed / interrupted / still running
    metrics: dict[str, Stat]  # RUN_METRICS plus the final metrics (ACCURACY_KEYS and others)
    flags: frozenset[str] = frozenset()  # union of the completed runs' energy flags

    def mean(self, name: str) -> float | None:
        stat = self.metrics.get(name)
        return None if stat is None else stat.mean


def stat(values: Iterable[float | None]) -> Stat:
    vals = np.array([v for v in values if v is not None], dtype=float)
    if vals.size == 0:
        return Stat(None, None, 0)
    mean = float(vals.mean())
    if vals.size < 2:
        return Stat(mean, None, 1)
    std = float(vals.std(ddof=1))
    # Identical repeats give a std of rounding noise (1e-17 relative); report them as exact.
    return Stat(mean, 0.0 if std <= 1e-12 * abs(mean) else std, int(vals.size))
