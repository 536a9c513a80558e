"""The energy curve E(t) of one device, built from its readings (pure numpy; float seconds).

E(t) is counter-anchored and power-shaped: it passes through every counter anchor (update
moment, value) and, between two anchors, shares the counter's increment in proportion to the
integral of the sampled power. The counter keeps long sums exact; power only says *when*
inside one update the energy was used. Without power the share is linear in time between
anchors (still far better than between readings, since anchors sit at the update moments), and
so it is where power cannot say when inside a window (shape_by_window: a lagging 1 s average,
or a part-time sensor whose instant power is the last window's mean; there the energy its
increment lacked for an unseen change of level is taken back, in the unseen part:
_part_time_lag).
Outside the first/last anchor the curve follows the power integral scaled by the counter's
recent counter/power ratio. A counter reset is bridged with the power integral so E stays one
increasing function. Without a counter E is the power integral itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from collector.energy.counter import counter_anchors, refine_phase, unpinned
from collector.energy.power import cumulative_trapezoid, edge_budget, integral_at, integral_scalar

CALIBRATION_WINDOWS = 10  # counter updates used for the counter/power ratio beyond the anchors
EXTRAPOLATION_REL = 0.05  # relative uncertainty of energy extrapolated beyond the last anchor
JUMP_FACTOR = 3.0  # a window's increment above this x the highest power x its length is a restart
MAX_DEVICE_W = 5000.0
# Sampling locked to the counter (every update at one phase of the readings: their scatter
# under this share of a bracket's) leaves every bracket alike: refine_phase cannot narrow one,
# and is skipped (a collector with hundreds of GPUs read on a locked schedule spent ~8 % of
# its time on it for nothing). Free-running readings scatter ~1.
LOCKED_INDEP = 0.2


@dataclass(frozen=True, slots=True)
class PowerPart:
    ts: np.ndarray
    pw: np.ndarray
    cum: np.ndarray  # trapezoid integral from ts[0]
    edges: np.ndarray  # edge_budget(ts, pw)
    max_w: float

    def integral(self, x: np.ndarray) -> np.ndarray:
        return integral_at(self.ts, self.pw, self.cum, x)

    def integral_scalar(self, x: float) -> float:
        return integral_scalar(self.ts, self.pw, self.cum, x)


@dataclass(frozen=True, slots=True)
class CounterPart:
    tc_first: float
    tc_last: float
    tau: np.ndarray  # anchor moments
    value: np.ndarray  # E at the anchors (counter values, reset windows bridged)
    half_width: np.ndarray
    reset_windows: np.ndarray  # window r = [tau[r], tau[r+1]] bridged across a reset
    i_tau: np.ndarray | None  # power integral at the anchors
    window_max_w: np.ndarray  # highest power seen in each window (bounds the timing error)
    window_shape_j: np.ndarray  # how wrong the power shape can be inside each window
    head_scale: float  # J of counter per J of power integral (or per s without power)
    tail_scale: float
    # Unobserved-window term of a partial-coverage sensor, cumulative over windows: pc_var[r]
    # = sum of the per-window error variances about their mean before window r (pc_sum: of
    # the bounds); pc_lag = (1 - f) / 2, the mean error per W of change and s of window.
    pc_var: np.ndarray | None = None
    pc_sum: np.ndarray | None = None
    pc_lag: float = 0.0
    # For the calibrated interval: power at each anchor (what misplacing it costs per second)
    # and the share of the update-time error that differs between anchors (timing_indep).
    p_tau: np.ndarray | None = None
    timing_indep: float = 1.0
    # Per window: the larger squared change of mean power to its neighbours (W^2), what a
    # power change inside the window is taken to be where power cannot show it.
    change_w2: np.ndarray | None = None
    # True where power cannot shape a window (none, a lagging average, a part-time sensor):
    # the share inside a window is then about linear in time, and its error is sized from
    # change_w2; else from the power segments' edges.
    shape_by_window: bool = False
    # The update moments' error (counter.refine_phase): per anchor, whether the counter's
    # periodicity pinned it, the variance that is its own and that of the grid estimate
    # (shared with the anchors near it; for anchors not pinned: the part timing_indep says is
    # common to all of them).
    refined: np.ndarray | None = None
    var_own: np.ndarray | None = None
    var_grid: np.ndarray | None = None
    src_lo: np.ndarray | None = None  # the brackets that set each pinned anchor's intersection
    src_hi: np.ndarray | None = None
    tau_seg: np.ndarray | None = None  # the power segment each anchor falls in
    # Per window where power cannot shape it on a sensor that sees all of the time: how far
    # its mean power lies beyond both neighbours' (W, squared; 0 where between them): a dip
    # or a peak inside it, two changes the neighbours' change does not show (_dip_w2).
    dip_w2: np.ndarray | None = None
    # Per window on a part-time sensor: the energy its increment lacked for a change in the
    # unseen part, taken back (_part_time_lag), and the moment that unseen part starts (the
    # last sensor window's, where readings left a gap): energy_at puts it there.
    lag_j: np.ndarray | None = None
    lag_from: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Model:
    t_first: float
    t_last: float
    power: PowerPart | None
    counter: CounterPart | None
    gap_start: np.ndarray
    gap_end: np.ndarray
    gap_cum: np.ndarray  # gap_cum[k] = total length of gaps before gap k
    settled: float  # E(t) for t <= settled no longer changes when later readings arrive


def build_model(
    ts: np.ndarray, pw: np.ndarray, cc: np.ndarray, spec, max_gap_s: float | None
) -> Model:
    """ts sorted and unique; pw / cc NaN where a reading lacks that value."""
    has_p = np.isfinite(pw)
    power = None
    if has_p.any():
        tp, pv = ts[has_p], pw[has_p]
        if spec.power_avg_s == 0 and spec.instant_power_lag_s:
            # instant power read at t shows the device at t - lag (measured against the
            # counter by the daemon): put it where it belongs before it shapes any window
            tp = tp - spec.instant_power_lag_s
        power = PowerPart(
            tp, pv, cumulative_trapezoid(tp, pv), edge_budget(tp, pv), float(pv.max())
        )
    has_c = np.isfinite(cc)
    counter = _build_counter(ts[has_c], cc[has_c], power, spec) if has_c.any() else None
    if max_gap_s is None and len(ts) > 1:
        max_gap_s = 5.0 * float(np.median(np.diff(ts)))
    if max_gap_s is None:
        gaps = np.empty(0, dtype=np.int64)
    else:
        gaps = np.flatnonzero(np.diff(ts) > max_gap_s)
    gap_start, gap_end = ts[gaps], ts[gaps + 1]
    gap_cum = np.concatenate(([0.0], np.cumsum(gap_end - gap_start)))
    settled = float(ts[-1])
    if counter is not None:
        back = settling_updates(spec)
        settled = float(counter.tau[-back]) if len(counter.tau) > back else float(ts[0])
    return Model(float(ts[0]), float(ts[-1]), power, counter, gap_start, gap_end, gap_cum, settled)


def settling_updates(spec) -> int:
    """How many of the newest counter updates E may still move at as readings arrive: the last
    (an anchor is final once its run has started; beyond it E is extrapolated), and on a
    part-time sensor the one before it too (its window waits for the next one's level:
    _part_time_lag)."""
    return 2 if spec.coverage_fraction < 1.0 else 1


def _build_counter(tc: np.ndarray, cc: np.ndarray, power: PowerPart | None, spec) -> CounterPart:
    a = counter_anchors(tc, cc, spec.update_s, spec.update_jitter_s)
    indep = _timing_independence(a, spec.update_s)
    if spec.pin_update_phase and indep > LOCKED_INDEP:
        phase = refine_phase(a, spec.update_s, spec.update_jitter_s, indep)
    else:
        phase = unpinned(a, indep)
    tau = phase.tau_s
    i_tau = power.integral(tau) if power is not None else None
    step = np.diff(a.value_j)
    jumps = a.reset[1:].copy()  # window r ends at the reset anchor r + 1
    if power is not None and len(step):
        # A counter that leaps by far more than any power seen, and more than any device can
        # draw, restarted with a new offset (a driver reload, a fresh sim): bridge it like a
        # reset. (A long gap in the readings while the GPU worked harder is no jump.)
        limit_w = max(JUMP_FACTOR * power.max_w, MAX_DEVICE_W)
        jumps |= step > limit_w * np.diff(tau) + 1.0
    resets = np.flatnonzero(jumps)
    if len(resets):
        dt = np.diff(tau)
        if i_tau is not None:
            bridge = np.diff(i_tau)[resets]
        else:  # no power: the neighbouring windows' rate
            ok = np.ones(len(step), dtype=bool)
            ok[resets] = False
            rate = step[ok].sum() / dt[ok].sum() if ok.any() else 0.0
            bridge = rate * dt[resets]
        step = step.copy()
        step[resets] = np.maximum(bridge, 0.0)
    lagged, lag_from = _part_time_lag(tau, step, spec.coverage_fraction, spec.update_s, resets)
    value = a.value_j[0] + np.concatenate(([0.0], np.cumsum(step + lagged)))
    window_max, window_shape = _window_bounds(tau, step, power)
    head, tail = _scales(tau, value, i_tau)
    change_w2 = _neighbour_change_w2(tau, step)
    pc_var, pc_sum = _partial_coverage(tau, step, spec.coverage_fraction, change_w2)
    by_window = power is None or spec.power_avg_s > 0 or spec.coverage_fraction < 1.0
    # power at the update moments: where power cannot shape a window it does not say that
    # either (a 1 s average lags, a part-time sensor's reading is last window's): the
    # counter's own rate in the windows on both sides does
    p_tau = _power_at_anchors(tau, step, None if by_window else power)
    return CounterPart(
        float(tc[0]), float(tc[-1]), tau, value, phase.half_width_s, resets, i_tau,
        window_max, window_shape, head, tail, pc_var, pc_sum,
        0.5 * (1.0 - spec.coverage_fraction), p_tau, indep,
        change_w2, by_window,
        phase.refined, phase.var_own_s2, phase.var_grid_s2, phase.src_lo, phase.src_hi,
        None if power is None else np.clip(
            np.searchsorted(power.ts, tau, side="right") - 1, 0, max(len(power.ts) - 2, 0)),
        _dip_w2(tau, step) if by_window and pc_var is None else None,
        None if lag_from is None else lagged, lag_from,
    )  # fmt: skip


def _power_at_anchors(tau: np.ndarray, step: np.ndarray, power: PowerPart | None) -> np.ndarray:
    if power is not None:
        return np.interp(tau, power.ts, power.pw)
    if len(tau) < 2:
        return np.zeros(len(tau))
    rate = step / np.maximum(np.diff(tau), 1e-9)
    padded = np.concatenate((rate[:1], rate, rate[-1:]))
    return np.maximum(padded[:-1], padded[1:])


def _timing_independence(a, update_s: float) -> float:
    """How much of the update-moment error differs from one anchor to the next (0..1).

    Sampling phase-locked to the counter (a fixed schedule whose period divides the counter's)
    misplaces every update by the same amount, and an interval's two bounds then err alike
    and largely cancel; free-running sampling misplaces each update independently. The
    readings that reveal updates (hi = tau + half_width) step by exactly one period when
    locked and scatter when not: their scatter, against a uniform bracket's, says which."""
    hi = a.tau_s + a.half_width_s
    d = np.diff(hi)
    d = d[(d > 0.5 * update_s) & (d < 1.5 * update_s)]
    if len(d) < 8:
        return 1.0
    bracket_var = float(np.mean(a.half_width_s**2)) / 3.0
    if bracket_var <= 0:
        return 1.0
    scatter = 0.5 * float(np.var(d))  # var(u_k - u_k-1) = 2 var(u) for independent offsets
    return float(np.clip(scatter / bracket_var, 0.05, 1.0))


def _window_means(tau: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Mean power per window: the counter's increment over the window's length (0 for a window
    of no length)."""
    dt = np.diff(tau)
    return step / np.where(dt > 0, dt, np.inf)


def _neighbour_change_w2(tau: np.ndarray, step: np.ndarray) -> np.ndarray | None:
    """Per window: the largest squared change of mean power (counter increment over window
    length) to the window before, to the window after, and between those two. Where power
    cannot show what happened inside a window, a change seen on either side of it may have
    happened inside; and one change of dL inside a window at share t shows to its neighbours
    only as t dL and (1 - t) dL, in full only between them."""
    if len(tau) < 2:
        return None
    mean_w = _window_means(tau, step)
    if len(mean_w) == 1:
        return mean_w**2  # nothing to compare with: as if it changed by all of it
    sq = np.diff(mean_w) ** 2  # sq[k]: between windows k and k + 1
    out = np.maximum(np.concatenate((sq[:1], sq)), np.concatenate((sq, sq[-1:])))
    if len(mean_w) > 2:
        out[1:-1] = np.maximum(out[1:-1], (mean_w[2:] - mean_w[:-2]) ** 2)
    return out


def _dip_w2(tau: np.ndarray, step: np.ndarray) -> np.ndarray | None:
    """Per window: the squared distance of its mean power beyond both neighbours' means (0 where
    it lies between them, or at the ends). One change inside a window leaves its mean between
    the levels before and after it; a mean below (above) both holds a dip (a peak), at least
    two changes, e.g. the all-reduce between two steps, which change_w2 does not show. Its
    energy, that distance x the window's length, sits somewhere inside the window: linearly
    shared, a part [s0, s1] of the window errs by at most that x max(ds, 1 - ds), and by that
    x (1[inside] - ds) for a short dip at a uniform place, variance x ds (1 - ds)."""
    if len(tau) < 4:
        return None
    mean_w = _window_means(tau, step)
    before, here, after = mean_w[:-2], mean_w[1:-1], mean_w[2:]
    beyond = np.maximum(
        np.maximum(np.minimum(before, after) - here, here - np.maximum(before, after)), 0.0
    )
    return np.concatenate(([0.0], beyond, [0.0])) ** 2


def _part_time_lag(
    tau: np.ndarray, step: np.ndarray, fraction: float, update_s: float, resets: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per window: the energy a part-time sensor's increment lacks, on average, for the change
    of level it did not see, and the moment its unseen part starts (zeros and None on a full
    sensor). The sensor measures the first `fraction` f of each window and scales it up, so
    its increment carries the level of that seen part through the unseen (1 - f) T. When the
    level changes inside the unseen part, the next window's seen part shows the new level:
    with one change at a uniform moment in it, the unseen part held the old and the new level
    for half of it each on average, so the window lacks (1 - f) T (m_next - m) / 2 (m: seen
    mean powers, increment over length). Taking it back halves that error's range (uniform in
    +- (1 - f) T dm / 2 about the corrected share, where it was uniform in [0, (1 - f) T dm]);
    energy_at puts it in the unseen part, rising towards the next level. Short intervals came
    out 16-45 % closer to the truth on the simulator; long ones gain little, since the lags
    telescope to the net change of level across them. A change inside the seen part was half
    seen, and the correction is then off by up to its own size: interval._partial_coverage
    charges that. A window that spans several of the sensor's (readings left a gap) lags only
    by its last one's: T is at most update_s. The last window waits for the next window's mean
    (Model.settled stays one update back); windows at a counter reset, and the one before it,
    are left as they are."""
    lagged = np.zeros(len(step))
    if fraction >= 1.0 or len(step) < 2:
        return lagged, None
    unseen = (1.0 - fraction) * np.minimum(np.diff(tau), update_s)
    mean_w = _window_means(tau, step)
    lagged[:-1] = 0.5 * unseen[:-1] * np.diff(mean_w)
    lagged[resets] = 0.0
    lagged[np.maximum(resets - 1, 0)] = 0.0
    return lagged, tau[1:] - unseen


def _partial_coverage(tau: np.ndarray, step: np.ndarray, fraction: float, change_w2):
    """A sensor that observes only `fraction` of each window scales that part up: the window's
    energy is off by what the unobserved part did differently. Nothing measures that part, so
    the power change next to the window (change_w2) stands in for a change inside it (a load
    phase-locked to the window shows none and stays invisible: the sensor's limit).

    Error model (as for a power edge between two readings): power changes once inside the
    window, by dL, at a uniformly random moment t (in window lengths T). A sensor that sees
    the first fraction f is then off by g(t) dL T: g = -(1 - t) when the change comes after
    the seen part, -t (1/f - 1) when inside it. Always the same sign (the reported level
    lags the change): mean -(1 - f) / 2, which _part_time_lag takes back, so what is left is
    the spread about it, variance (1 - f)^2 / 12 (the correction's own error, where the
    change was in the seen part, telescopes over an interval's windows and is charged once:
    interval._partial_coverage). pc_var[r] is the cumulative sum of (1 - f)^2 (dL T)^2 / 12
    window by window. The bound (pc_sum) takes that change (change_w2) whole in every
    window."""
    if fraction >= 1.0 or len(tau) < 3:
        return None, None
    dt = np.diff(tau)
    bound = (1.0 - fraction) * dt * np.sqrt(change_w2)
    var = ((1.0 - fraction) * dt) ** 2 * change_w2 / 12.0
    return (
        np.concatenate(([0.0], np.cumsum(var))),
        np.concatenate(([0.0], np.cumsum(bound))),
    )


def _window_bounds(
    tau: np.ndarray, step: np.ndarray, power: PowerPart | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per window: the highest power around it and the worst-case error of the power shape."""
    if len(tau) < 2:
        return np.empty(0), np.empty(0)
    if power is None:
        rate = step / np.diff(tau)
        padded = np.concatenate((rate[:1], rate, rate[-1:]))
        highest = np.maximum(np.maximum(padded[:-2], padded[1:-1]), padded[2:])
        return highest, 0.5 * step  # linear-in-time share: at most half the increment off
    ts, pw = power.ts, power.pw
    last = len(ts) - 1
    lo = np.clip(np.searchsorted(ts, tau, side="right") - 1, 0, last)  # reading at/before
    hi = np.clip(np.searchsorted(ts, tau, side="left"), 0, last)  # reading at/after
    inner = np.maximum.reduceat(pw, lo)[:-1]  # readings in [lo_r, lo_r+1)
    highest = np.maximum(np.maximum(inner, pw[lo[1:]]), pw[hi[1:]])
    shape = 0.5 * np.sqrt(power.edges[hi[1:]] - power.edges[lo[:-1]])
    return highest, np.minimum(shape, step)


def _scales(tau: np.ndarray, value: np.ndarray, i_tau: np.ndarray | None) -> tuple[float, float]:
    """Counter per power-integral (or per second) over the first and last few windows."""
    w = min(CALIBRATION_WINDOWS, len(tau) - 1)
    if w < 1:
        return (1.0, 1.0) if i_tau is not None else (0.0, 0.0)
    base = i_tau if i_tau is not None else tau
    head_d, tail_d = base[w] - base[0], base[-1] - base[-1 - w]
    head = (value[w] - value[0]) / head_d if head_d > 0 else None
    tail = (value[-1] - value[-1 - w]) / tail_d if tail_d > 0 else None
    fallback = 1.0 if i_tau is not None else 0.0
    return (head if head is not None else fallback, tail if tail is not None else fallback)


def energy_at(m: Model, x: float) -> float:
    """E at x (x inside [t_first, t_last]); J on the counter's own scale."""
    c, p = m.counter, m.power
    if c is None:
        return p.integral_scalar(x)
    tau, value = c.tau, c.value
    last = len(tau) - 1
    r = int(tau.searchsorted(x, side="right")) - 1
    ix = p.integral_scalar(x) if p is not None else 0.0
    if r < 0 or r >= last:  # beyond the anchors: follow power (or the rate), scaled
        near = 0 if r < 0 else last
        scale = c.head_scale if r < 0 else c.tail_scale
        base = ix - float(c.i_tau[near]) if p is not None else x - float(tau[near])
        return float(value[near]) + scale * base
    t0, v0, v1 = float(tau[r]), float(value[r]), float(value[r + 1])
    if p is not None and not c.shape_by_window:
        i0 = float(c.i_tau[r])
        den = float(c.i_tau[r + 1]) - i0
        if den > 0:
            return v0 + (v1 - v0) * ((ix - i0) / den)
    t1 = float(tau[r + 1])
    share = (x - t0) / (t1 - t0)
    if c.lag_j is not None and c.lag_j[r]:
        # a part-time sensor's window: the seen part at its seen level, the unseen part moving
        # to the next window's (one change at a uniform moment in it: the expected power
        # rises linearly, so the energy taken back comes in with the square of the share)
        lag, start = float(c.lag_j[r]), float(c.lag_from[r])
        late = max(x - start, 0.0) / (t1 - start)
        return v0 + (v1 - v0 - lag) * share + lag * late * late
    return v0 + (v1 - v0) * share


def gap_overlap(m: Model, a: float, b: float) -> tuple[float, bool]:
    """Total length of gaps inside [a, b] and whether any gap touches (a, b)."""
    gs, ge = m.gap_start, m.gap_end
    if len(gs) == 0:
        return 0.0, False
    k0 = int(ge.searchsorted(a, side="right"))  # first gap ending after a
    k1 = int(gs.searchsorted(b, side="left"))  # gaps before k1 start before b
    if k0 >= k1:
        return 0.0, False
    total = float(m.gap_cum[k1] - m.gap_cum[k0])
    total -= max(0.0, a - float(gs[k0])) + max(0.0, float(ge[k1 - 1]) - b)
    return total, True
