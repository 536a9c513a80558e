"""When did a stepped energy counter update? (pure numpy; times in float seconds)

A total-energy counter (NVML: mJ since driver load) advances in steps, about every
`update_s`: a reading at t shows the exact energy up to the last update at or before t, not up
to t. So readings with equal values form a *run*, and the update that produced a run's value
happened after the previous run's last reading and at or before the run's first reading; and,
since the counter advances at least once per period, no earlier than one period before that
first reading (this is what bounds it when readings are slower than the counter). Each run
yields one *anchor*: (estimated update moment, value), the moment being the middle of that
bracket and known to +- half its width. Anchors, not readings, are what E(t) is pinned to.

Not done, on purpose: narrowing brackets by assuming updates on a regular grid. It only helps
when sampling jitters by a good part of its period relative to the grid (a daemon sampling on
a fixed schedule stays phase-locked to the counter, and then it gains nothing), and when the
updates stray from the grid it makes confident, wrong brackets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERIOD_TOLERANCE = 0.002  # relative error allowed in the nominal update period


@dataclass(frozen=True, slots=True)
class Anchors:
    tau_s: np.ndarray  # estimated update moments (strictly increasing)
    value_j: np.ndarray  # counter value from that moment on
    half_width_s: np.ndarray  # the moment is tau_s +- half_width_s
    reset: np.ndarray  # bool: value dropped at this anchor (counter restarted)


def counter_anchors(tc: np.ndarray, cc: np.ndarray, update_s: float, jitter_s: float) -> Anchors:
    """One anchor per run of equal counter values; tc sorted, both non-empty."""
    starts = run_starts(cc)
    hi = tc[starts]
    prev = np.concatenate(([-np.inf], tc[starts[1:] - 1]))
    longest = update_s * (1.0 + PERIOD_TOLERANCE) + 2.0 * jitter_s  # between two updates
    lo = np.maximum(prev, hi - longest)
    value = cc[starts]
    reset = np.concatenate(([False], value[1:] < value[:-1]))
    return Anchors((lo + hi) / 2, value, (hi - lo) / 2, reset)


def run_starts(cc: np.ndarray) -> np.ndarray:
    """Index of the first reading of each run of equal values."""
    return np.concatenate(([0], np.flatnonzero(cc[1:] != cc[:-1]) + 1))
