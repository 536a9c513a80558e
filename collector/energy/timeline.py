"""Energy attribution: the energy of any interval on one device, from its readings (pure core).

Method (DESIGN.md "Energy attribution"): the total-energy counter is primary. It advances in
~100 ms steps, so E(t) is pinned to *anchors* - the estimated update moments with the value
each update produced (energy_counter.py) - and between two anchors the counter's increment is
shared in proportion to the integral of instantaneous power (energy_model.py). The energy of
[a, b] is E(b) - E(a) of that one function, so intervals are exactly additive. Without a
counter the trapezoid integral of power is used (source "power", flag "no_counter"); with one,
the power integral is still computed as a cross-check.

uncertainty_j is the half-width of a calibrated 95 % interval: energy_j +- uncertainty_j holds
the true energy of ~95 % of intervals (bench/bench_attribution.py measures this per interval
length and sensor mode; docs/accuracy.md). It is 1.96 sigma of an error model, capped by the
near-worst-case bound bound_j, plus bridged_j (energy bridged across a counter reset, whose
bound is kept whole). The bound, for source "counter", is the sum over both bounds x of
    P_max(x) * h(x) + S(x) + resolution_j
  P_max: the highest power read inside the counter update window around x;
  h:     the larger half-width of the window's two anchor brackets (how well the update
         moments are known: half a sampling period, or half of update_s when sampling is
         slower than the counter);
  S:     how wrong the power shape can be inside that window: 0.5 * sqrt(sum (dP * dt)^2)
         over its power segments (an edge between two readings misplaces at most half of
         dP * dt); half the window's increment when power is a lagging average
         (power_avg_s > 0) or absent (the share is then ~linear in time); the whole
         increment when x falls inside a gap.
  Beyond the first/last anchor (at the very start or end of the readings) S becomes the edge
  budget back to that anchor plus 5 % of the energy extrapolated from it.
  On a partial-coverage sensor (CounterSpec.coverage_fraction < 1) every window the interval
  touches adds (1 - fraction) * its length * the larger power change to its neighbours, and
  S is at least half the window's increment (as without power).
The error model behind sigma (each term derived from what the sensor is and what the
readings show; no constant fitted to a benchmark), terms independent, added in quadrature:
- update moments: each is uniform in its bracket (var h^2 / 3), narrowed by the counter's
  periodicity where the brackets before it agree with a stable period (counter.refine_phase,
  CounterSpec.pin_update_phase, on by default); E(x) moves by -(1 - s) P_r d_r - s P_r+1
  d_r+1 (s: x's share of the window, P: power at the anchors). The part of d common to
  anchors cancels between the two bounds: for anchors their own bracket places, the part
  common to all (phase-locked sampling, measured from how regularly the updates show up);
  for pinned anchors, their grid estimate, shared with pinned anchors whose bracket
  intersections end at the same brackets (interval._timing_var);
- power shape, where instant power shapes the windows: between two readings power changed
  once, at a uniformly random moment, so a segment misplaces energy with variance
  (dP dt)^2 / 12; E(x) errs by (1 - s) x the misplaced energy before x minus s x that after
  it (the segment x cuts in closed form, interval._segment_var), and two bounds in one window
  share their segments;
- power shape, where power cannot shape a window (no power, a 1 s average, a part-time
  sensor; the share inside a window is then linear in time, on a part-time sensor but for the
  lag taken back, which goes to the unseen part): power changed inside the window
  by dL, the largest change of mean power to a neighbouring window or between the two
  neighbours (one change inside a window shows in full only there), at the bound (markers
  sit where the loop changes phase): a bound at share s errs by T dL s (1 - s);
- part-time sensor (CounterSpec.coverage_fraction f < 1): per window, a change at a uniformly
  random moment makes the seen part misstate the window by g dL T, g always lagging: mean
  -(1 - f) / 2, which the curve takes back (the next window's seen level shows the change:
  model._part_time_lag), variance about it (1 - f)^2 / 12, per window, a window at either end
  of [a, b] times the part of it inside squared; the correction's own error (a change in a
  seen part was half seen) telescopes over the windows wholly inside to (1 - f) T / 2 x the
  net change of level across them, charged once;
- counter quantum: resolution_j, uniform.
uncertainty_j = 1.96 sigma, capped by the bound. For source "power": (dP dt)^2 / 12 per
segment inside, plus per bound 0.5 * dP * dt of the segment holding it and
0.5 * P * power_avg_s (each uniform within its bound).
Readings whose power is the driver's average (power_from_avg) are left out of the power curve
where instant readings exist; instant power is shifted back by instant_power_lag_s.

"disagree": |counter - power integral| > disagree_rel * |counter| + disagree_abs_j + both
uncertainties (CounterSpec defaults: 5 % + 1 J).
"counter_reset": the counter went down inside the interval (driver reload); that update window
is bridged with the power integral, so energy stays positive and additive.
"gap": two consecutive readings inside the interval are further apart than max_gap_ns (default
5x the median spacing); the counter still gives the energy across it, but coverage excludes it.
"incomplete": the interval reaches before the first or after the last reading; energy_j is the
covered part only (None with coverage 0 when nothing is covered).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from collector.energy.counter import PHASE_HISTORY_S, run_starts
from collector.energy.interval import measure
from collector.energy.model import Model, build_model, energy_at, settling_updates
from collector.energy.power import trapezoid
from collector.energy.types import FLAGS, CounterSpec, IntervalEnergy, Sample

DEFAULT_SPEC = CounterSpec()
PHASE_HISTORY_NS = round(PHASE_HISTORY_S * 1e9)

__all__ = [
    "FLAGS",
    "DEFAULT_SPEC",
    "CounterSpec",
    "DeviceTimeline",
    "IntervalEnergy",
    "Sample",
    "attribute",
    "idle_power_w",
    "integrate_power",
]


def _arrays(samples: Iterable[Sample]):
    """Columns (time, power, counter, power-is-an-average) of the samples (None -> NaN). One
    list per column: ~0.2 us a sample, where a tuple per sample cost ~1 us (every reading
    passes here)."""
    samples = samples if isinstance(samples, list) else list(samples)
    if not samples:
        return np.empty(0, np.int64), np.empty(0), np.empty(0), np.empty(0, bool)
    t = np.array([s.time_ns for s in samples], dtype=np.int64)
    p = np.array([s.power_w for s in samples], dtype=float)  # None -> nan
    c = np.array([s.energy_j for s in samples], dtype=float)
    a = np.array([s.power_from_avg for s in samples], dtype=bool)
    return t, p, c, a


def effective_power(p: np.ndarray, from_avg: np.ndarray, spec: CounterSpec):
    """(power, spec) for the energy model. Readings whose power is the driver's average
    (power_from_avg: instant power failed) are smoothed over ~1 s: among instant readings they
    would draw a false shape inside a counter window, so their power is left out (the counter
    still counts); when no reading held has instant power, power is a lagging average and the
    spec says so (power_avg_s: wider shape terms, no lag shift)."""
    if spec.power_avg_s > 0 or not from_avg.any():
        return p, spec
    if (np.isfinite(p) & ~from_avg).any():
        return np.where(from_avg, np.nan, p), spec
    return p, dataclasses.replace(spec, power_avg_s=spec.avg_window_s)


class DeviceTimeline:
    """Readings of one device (kept sorted; out-of-order input is merged, a repeated time_ns
    keeps the reading seen first) with energy_at(t) and interval(start, end).

    max_gap_ns: readings further apart are a gap (None: 5x the median spacing of the
    readings held). The curve is rebuilt lazily after extend()/trim() (linear in the readings
    held, ~0.1 us each); queries then cost a few binary searches each. energy_at() values stay
    on one scale across extend() and trim()."""

    def __init__(self, spec: CounterSpec = DEFAULT_SPEC, max_gap_ns: int | None = None) -> None:
        self.spec = spec
        self.max_gap_ns = max_gap_ns
        self._t = np.empty(0, np.int64)
        self._p = np.empty(0)
        self._c = np.empty(0)
        self._a = np.empty(0, bool)  # power_w is the driver's average
        self._origin_ns: int | None = None
        self._offset_j = 0.0  # keeps energy_at() continuous when trim() drops history
        self._model: Model | None = None
        self._spec = spec  # as the model uses it (effective_power)
        self.built_ns = -(1 << 62)  # newest reading at the last model build

    def __len__(self) -> int:
        return len(self._t)

    def set_spec(self, spec: CounterSpec) -> None:
        """New sensor facts (a daemon measured them afresh): the curve is rebuilt with them.
        energy_at() values may shift by what the facts change; intervals stay consistent."""
        if spec != self.spec:
            self.spec, self._spec, self._model = spec, spec, None

    def extend(self, samples: Iterable[Sample]) -> None:
        self.extend_columns(*_arrays(samples))

    def extend_columns(self, t: np.ndarray, p: np.ndarray, c: np.ndarray, a: np.ndarray) -> None:
        """Readings as columns: time_ns (int64), power_w and energy_j (NaN: none),
        power_from_avg (bool). A reading with neither power nor energy is left out."""
        keep = ~(np.isnan(p) & np.isnan(c))
        if not keep.all():
            t, p, c, a = t[keep], p[keep], c[keep], a[keep]
        if not len(t):
            return
        if self._origin_ns is None:
            self._origin_ns = int(t.min())
        in_order = bool(np.all(np.diff(t) > 0)) and (not len(self._t) or t[0] > self._t[-1])
        old = (self._t, self._p, self._c, self._a)
        t, p, c, a = (np.concatenate(pair) for pair in zip(old, (t, p, c, a), strict=True))
        if not in_order:
            order = np.argsort(t, kind="stable")  # earlier readings first among equal times
            t, p, c, a = t[order], p[order], c[order], a[order]
            keep = np.concatenate(([True], t[1:] != t[:-1]))
            t, p, c, a = t[keep], p[keep], c[keep], a[keep]
        self._t, self._p, self._c, self._a = t, p, c, a
        self._model = None

    def trim(self, before_ns: int) -> None:
        """Forget readings no longer needed for intervals starting at or after before_ns."""
        if not len(self._t) or before_ns <= self._t[0]:
            return
        model = self._ensure()
        cut = self._cut_index(model, before_ns)
        if cut <= 0:
            return
        x = self._s(min(max(before_ns, int(self._t[cut])), int(self._t[-1])))
        old = energy_at(model, x)
        self._t, self._p, self._c = self._t[cut:], self._p[cut:], self._c[cut:]
        self._a = self._a[cut:]
        self._model = None
        self._offset_j += old - energy_at(self._ensure(), x)

    def covered_until_ns(self) -> int | None:
        """Time of the last reading (readings span [first, this])."""
        return int(self._t[-1]) if len(self._t) else None

    def settled_until_ns(self) -> int | None:
        """Energy up to here no longer changes when later readings arrive: the last counter
        update seen (up to one update behind covered_until_ns); beyond it E is extrapolated.
        Compute intervals ending before it for final figures."""
        if not len(self._t):
            return None
        if self._model is None and (quick := self._settled_quick()) is not None:
            return quick
        model = self._ensure()
        if model.counter is None:
            return int(self._t[-1])  # a power integral is final up to the last reading
        return self._origin_ns + round(model.settled * 1e9)

    def _settled_quick(self, tail: int = 64) -> int | None:
        """settled_until_ns without rebuilding the model (asked at every poll for every device
        with an interval ending: a rebuild each time cost a collector most of its CPU with
        hundreds of GPUs): the reading before the counter's last change among the newest
        `tail` readings (on a part-time sensor the change before it: model._part_time_lag).
        The update moment lies after that reading, so this is never later than the model's
        answer (at most one reading spacing earlier). None when the tail holds too few
        changes (the model decides: few anchors, no counter)."""
        c = self._c[-tail:]
        t = self._t[-tail:]
        ok = np.flatnonzero(~np.isnan(c))
        if len(ok) < 3:
            return None
        changed = np.flatnonzero(c[ok][1:] != c[ok][:-1])
        back = settling_updates(self._spec)
        if len(changed) < back + 1:
            return None
        return int(t[ok[changed[-back]]])

    def recent_power(self, n: int) -> np.ndarray:
        """power_w of the newest n readings (NaN: none)."""
        return self._p[-n:]

    def newest_counter(self) -> float:
        """The counter of the newest reading that has one (NaN: none)."""
        counted = np.flatnonzero(np.isfinite(self._c))
        return float(self._c[counted[-1]]) if len(counted) else float("nan")

    def energy_at(self, t_ns: int) -> float | None:
        """E(t) in J (counter scale where there is one), None outside the readings."""
        if not len(self._t) or not self._t[0] <= t_ns <= self._t[-1]:
            return None
        return energy_at(self._ensure(), self._s(t_ns)) + self._offset_j

    def interval(self, start_ns: int, end_ns: int) -> IntervalEnergy:
        if end_ns < start_ns:
            raise ValueError(f"interval ends before it starts: {start_ns} > {end_ns}")
        if not len(self._t):
            return IntervalEnergy(
                start_ns, end_ns, None, "none", None, 0.0, None, None, 0.0,
                frozenset({"incomplete"}),
            )  # fmt: skip
        model = self._ensure()
        return measure(model, self._spec, self._s(start_ns), self._s(end_ns), start_ns, end_ns)

    def _s(self, t_ns: int) -> float:
        return (t_ns - self._origin_ns) / 1e9  # exact int difference first: ns stay ns

    @property
    def model_current(self) -> bool:
        """The energy model holds every reading (queries need no rebuild)."""
        return self._model is not None

    def _ensure(self) -> Model:
        if self._model is None:
            self.built_ns = int(self._t[-1]) if len(self._t) else self.built_ns
            ts = (self._t - self._origin_ns) / 1e9
            gap = None if self.max_gap_ns is None else self.max_gap_ns / 1e9
            p, self._spec = effective_power(self._p, self._a, self.spec)
            self._model = build_model(ts, p, self._c, self._spec, gap)
        return self._model

    def _cut_index(self, model: Model, before_ns: int) -> int:
        """Keep the reading before before_ns and, with a counter, the previous run's last
        reading too: it bounds the bracket of the update that anchors before_ns; and the
        brackets that pin the update phase there, where it is pinned (PHASE_HISTORY_S)."""
        k = int(np.searchsorted(self._t, before_ns, side="right")) - 1
        if model.counter is None:
            return k
        if self._spec.pin_update_phase:
            k = int(np.searchsorted(self._t, before_ns - PHASE_HISTORY_NS, side="right")) - 1
            if k < 0:
                return 0
        counter_rows = np.flatnonzero(np.isfinite(self._c))
        starts = counter_rows[run_starts(self._c[counter_rows])]
        run = int(np.searchsorted(starts, k, side="right")) - 1
        return min(k, int(starts[run]) - 1) if run > 0 else 0


def attribute(
    samples: Sequence[Sample], start_ns: int, end_ns: int, spec: CounterSpec = DEFAULT_SPEC
) -> IntervalEnergy:
    """One interval from a list of samples (any order)."""
    timeline = DeviceTimeline(spec)
    timeline.extend(samples)
    return timeline.interval(start_ns, end_ns)


def integrate_power(samples: Sequence[Sample], start_ns: int, end_ns: int) -> float | None:
    """Trapezoid integral of power over [start, end], interpolated at both bounds; None unless
    power readings span the whole interval."""
    pts = sorted({s.time_ns: s.power_w for s in reversed(samples) if s.power_w is not None}.items())
    if not pts or end_ns < start_ns or not pts[0][0] <= start_ns <= end_ns <= pts[-1][0]:
        return None
    t0 = pts[0][0]
    ts = np.array([(t - t0) / 1e9 for t, _ in pts])
    pw = np.array([p for _, p in pts])
    if len(ts) == 1:
        return 0.0
    return trapezoid(ts, pw, (start_ns - t0) / 1e9, (end_ns - t0) / 1e9)


def idle_power_w(samples: Sequence[Sample]) -> float | None:
    """Idle power from samples known to be idle: the median of the power readings (robust to
    the odd spike from another process); the counter's mean rate where there is no power."""
    powers = [s.power_w for s in samples if s.power_w is not None]
    if powers:
        return float(np.median(powers))
    pts = sorted((s.time_ns, s.energy_j) for s in samples if s.energy_j is not None)
    if len(pts) < 2 or pts[-1][0] == pts[0][0] or pts[-1][1] < pts[0][1]:
        return None
    return (pts[-1][1] - pts[0][1]) / ((pts[-1][0] - pts[0][0]) / 1e9)
