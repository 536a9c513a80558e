"""One interval's energy, cross-check, uncertainty, coverage and flags from a Model."""

from __future__ import annotations

import math

import numpy as np

from collector.energy.counter import PHASE_WINDOW_S
from collector.energy.model import EXTRAPOLATION_REL, Model, energy_at, gap_overlap
from collector.energy.types import CounterSpec, IntervalEnergy, calibrated_u


def measure(m: Model, spec: CounterSpec, a: float, b: float, a_ns: int, b_ns: int):
    """[a, b] in the model's float seconds; a_ns/b_ns are echoed into the result."""
    a2, b2 = max(a, m.t_first), min(b, m.t_last)
    flags = set()
    if a < m.t_first or b > m.t_last:
        flags.add("incomplete")
    if a2 > b2 or (a2 == b2 and "incomplete" in flags):
        return IntervalEnergy(
            a_ns, b_ns, None, "none", None, 0.0, None, None, 0.0, frozenset(flags)
        )
    gap_len, has_gap = gap_overlap(m, a2, b2)
    if has_gap:
        flags.add("gap")
    coverage = ((b2 - a2) - gap_len) / (b - a) if b > a else 1.0
    p, c = m.power, m.counter
    power_j = power_u = None
    if p is not None and p.ts[0] <= a2 and b2 <= p.ts[-1]:
        power_j = p.integral_scalar(b2) - p.integral_scalar(a2)
        power_u, power_var = _power_uncertainty(m, spec, a2, b2)
        guess = 0.5 * p.max_w * gap_len  # power inside a gap is a guess
        power_u, power_var = power_u + guess, power_var + guess * guess / 3.0
    bridged = win_var = 0.0
    if c is not None and c.tc_first <= a2 and b2 <= c.tc_last:
        ea, eb = energy_at(m, a2), energy_at(m, b2)
        energy, source = eb - ea, "counter"
        ua, va, ta = _counter_bound_u(m, spec, a2, ea)
        ub, vb, tb = _counter_bound_u(m, spec, b2, eb)
        pc_u, pc_var = _partial_coverage(m, a2, b2)
        u, win_var = ua + ub + pc_u, pc_var
        var = va + vb + _timing_var(m, ta, tb) + _shape_var(m, a2, b2, ea, eb)
        if _crosses_reset(m, a2, b2):
            flags.add("counter_reset")
            bridged = _bridged_u(m, spec, a2, b2)
        if power_j is not None:
            tol = spec.disagree_rel * abs(energy) + spec.disagree_abs_j + u + power_u
            if abs(energy - power_j) > tol:
                flags.add("disagree")
    elif power_j is not None:
        energy, source, u, var, win_var = power_j, "power", power_u, power_var, 0.0
        flags.add("no_counter")
    else:
        return IntervalEnergy(
            a_ns, b_ns, None, "none", None, 0.0, None, None, coverage, frozenset(flags)
        )
    if b2 == a2:
        energy, u, var, win_var, bridged = 0.0, 0.0, 0.0, 0.0, 0.0
    avg, peak = _avg_max_power(m, energy, a2, b2)
    bound = float(u + bridged)
    u95 = calibrated_u(bound, bridged, var + win_var)
    return IntervalEnergy(
        a_ns, b_ns, energy, source, power_j, u95, avg, peak, coverage, frozenset(flags),
        bound, float(bridged), float(var), float(win_var),
    )  # fmt: skip


def _local_power(m: Model, x: float) -> tuple[float, float, float]:
    """Power readings around x: (higher of the two, |their difference|, their spacing)."""
    ts, pw = m.power.ts, m.power.pw
    if len(ts) == 1:
        return float(pw[0]), 0.0, 0.0
    j = _segment_of(ts, x)
    p0, p1 = float(pw[j]), float(pw[j + 1])
    return max(p0, p1), abs(p1 - p0), float(ts[j + 1] - ts[j])


def _edges_between(m: Model, x0: float, x1: float) -> float:
    """Worst-case trapezoid error from power edges between x0 and x1 (root-sum-square)."""
    ts, q = m.power.ts, m.power.edges
    lo = max(int(ts.searchsorted(min(x0, x1), side="right")) - 1, 0)
    hi = min(int(ts.searchsorted(max(x0, x1), side="left")), len(ts) - 1)
    return 0.5 * math.sqrt(max(float(q[hi] - q[lo]), 0.0))


def _power_uncertainty(m: Model, spec: CounterSpec, a: float, b: float) -> tuple[float, float]:
    """(bound, variance): each edge term is at most its bound, uniformly spread below it."""
    edges = _edges_between(m, a, b)
    u, var = edges, edges * edges / 3.0
    for x in (a, b):
        high, dp, dt = _local_power(m, x)
        seg, lag = 0.5 * dp * dt, 0.5 * high * spec.power_avg_s
        u += seg + lag
        var += (seg * seg + lag * lag) / 3.0
    return u, var


def _counter_bound_u(
    m: Model, spec: CounterSpec, x: float, e_x: float
) -> tuple[float, float, dict[int, float]]:
    """(bound, variance, timing) of E at x. The bound adds worst cases; the variance treats each
    shape term as uniform within its bound; timing: how E(x) moves per second each anchor's
    moment is off (E(x) errs by -(1 - s) P_r d_r - s P_r+1 d_r+1, s the share of the window's
    power integral before x), combined over both bounds by _timing_var."""
    c = m.counter
    last = len(c.tau) - 1
    r = int(c.tau.searchsorted(x, side="right")) - 1
    res = spec.resolution_j
    if 0 <= r < last:
        h = max(float(c.half_width[r]), float(c.half_width[r + 1]))
        shape = float(c.window_shape_j[r])
        step = float(c.value[r + 1] - c.value[r])
        var = res * res / 3.0
        if _in_gap(m, x):  # nothing says when inside the window the energy went
            shape = step
            var += step * step / 12.0  # the share uniformly anywhere in the window
        elif c.shape_by_window:  # power cannot shape the window: the share is ~linear
            shape = max(shape, 0.5 * step)
        share = (e_x - float(c.value[r])) / step if step > 0 else 0.5
        share = min(max(share, 0.0), 1.0)
        p0, p1 = float(c.p_tau[r]), float(c.p_tau[r + 1])
        timing = {r: -(1.0 - share) * p0, r + 1: -share * p1}
        return float(c.window_max_w[r]) * h + shape + res, var, timing
    near = 0 if r < 0 else last
    if m.power is not None:
        high = _local_power(m, x)[0]
        if len(c.window_max_w):
            high = max(high, float(c.window_max_w[min(max(near - 1, 0), last - 1)]))
        shape = _edges_between(m, float(c.tau[near]), x)
    else:
        high, shape = abs(c.tail_scale if near else c.head_scale), 0.0
    extrapolated = EXTRAPOLATION_REL * abs(e_x - float(c.value[near]))
    timing = high * float(c.half_width[near])
    var = (timing**2 + shape**2 + extrapolated**2 + res**2) / 3.0
    return timing + shape + extrapolated + res, var, {}


def _shape_var(m: Model, a: float, b: float, ea: float, eb: float) -> float:
    """Variance of E(b) - E(a) from how the counter's increments are shared inside their
    windows (bounds beyond the anchors or inside a gap are sized by _counter_bound_u).

    One error model throughout: between two observations power changes once, at a uniformly
    random moment. Where instant power shapes the window the observations are its readings:
    a segment whose power changed by dP over dt misplaces dP dt (1/2 - a) of energy (a: the
    moment, a share of the segment), variance (dP dt)^2 / 12, and E(x) errs by (1 - s) x the
    misplaced energy before x minus s x that after it (s: x's share of the window; the
    increment itself is exact): a segment wholly before x weighs (1 - s)^2, one after it s^2,
    and the segment x falls in as _segment_var says. Where power cannot shape the window, the
    observations are the windows: see _window_share_var."""
    c = m.counter
    last = len(c.tau) - 1
    ra = int(c.tau.searchsorted(a, side="right")) - 1
    rb = int(c.tau.searchsorted(b, side="right")) - 1
    in_a = 0 <= ra < last and not _in_gap(m, a)
    in_b = 0 <= rb < last and not _in_gap(m, b)
    if in_a and in_b and ra == rb:
        return _within_var(m, ra, (a, b), (ea, eb))
    var = 0.0
    if in_a:
        r = ra + 1
        var += _within_var(m, ra, (a, float(c.tau[r])), (ea, float(c.value[r])))
    if in_b:
        var += _within_var(m, rb, (float(c.tau[rb]), b), (float(c.value[rb]), eb))
    return var


def _within_var(m: Model, r: int, x: tuple, e: tuple) -> float:
    """Variance of the energy the curve puts in [x0, x1], a part of window r (E there: e)."""
    c = m.counter
    t0, t1 = float(c.tau[r]), float(c.tau[r + 1])
    if t1 <= t0:
        return 0.0
    if c.shape_by_window or m.power is None:
        if c.change_w2 is None:
            return 0.0
        s0, s1 = (x[0] - t0) / (t1 - t0), (x[1] - t0) / (t1 - t0)
        var = float(c.change_w2[r]) * _window_share_var(s0, s1)
        if c.dip_w2 is not None:  # a dip's energy at a uniform place (model._dip_w2)
            ds = min(max(s1, 0.0), 1.0) - min(max(s0, 0.0), 1.0)
            var += float(c.dip_w2[r]) * max(ds, 0.0) * (1.0 - max(ds, 0.0))
        return (t1 - t0) ** 2 * var
    step = float(c.value[r + 1] - c.value[r])
    ds = (e[1] - e[0]) / step if step > 0 else (x[1] - x[0]) / (t1 - t0)
    ds = min(max(ds, 0.0), 1.0)
    # the part's error: M(x1) - M(x0) - ds (M(t1) - M(t0)), M the trapezoid's cumulative
    # misplaced energy; each segment adds its own, independent of the others
    ts, cum = m.power.ts, m.power.edges
    if len(ts) < 2:
        return 0.0
    seg_r, seg_r1 = int(c.tau_seg[r]), int(c.tau_seg[r + 1])
    j0 = seg_r if x[0] == t0 else _segment_of(ts, x[0])
    j1 = seg_r1 if x[1] == t1 else _segment_of(ts, x[1])
    order = sorted(((x[0], -1.0, j0), (x[1], 1.0, j1), (t0, ds, seg_r), (t1, -ds, seg_r1)))
    points = [(p, coef) for p, coef, _ in order]
    cut = [j for _, _, j in order]
    var = passed = 0.0  # passed: the points' coefficients so far (minus those of the segments
    for k, (j, (_, coef)) in enumerate(zip(cut, points, strict=True)):  # between two points)
        if k and j > cut[k - 1] + 1:  # segments wholly between the previous cut and this one
            var += float(cum[j] - cum[cut[k - 1] + 1]) * passed * passed / 12.0
        if not k or j != cut[k - 1]:  # a segment a point cuts, once, with all its points
            var += float(cum[j + 1] - cum[j]) * _segment_var(ts, j, points)
        passed += coef
    return var


def _segment_of(ts: np.ndarray, x: float) -> int:
    """The power segment [ts[j], ts[j + 1]] x falls in (the first or last beyond the readings;
    model.CounterPart.tau_seg holds the anchors')."""
    return min(max(int(ts.searchsorted(x, side="right")) - 1, 0), len(ts) - 2)


def _segment_var(ts: np.ndarray, j: int, points) -> float:
    """Variance, per (dP dt)^2, of what segment j adds to sum_p c_p M(p) (points (p, c_p) whose
    coefficients add up to 0), when power changed once inside it at a uniform moment a (a
    share of the segment): the trapezoid has misplaced (v - a)+ - v^2 / 2 of its energy before
    share v of it, so the sum is sum_p c_p (v_p - a)+ plus a constant, v_p the share of the
    segment before p (0 before it, 1 after it), whose variance is in closed form:
    cov((v - a)+, (w - a)+) = v^2 w / 2 - v^3 / 6 - v^2 w^2 / 4 for v <= w. A segment wholly
    inside a part weighs (1 - k)^2 / 12, one outside it k^2 / 12 (k: the part's share of its
    window); splitting the cut segment's (dP dt)^2 / 12 by the time on either side of the cut,
    as before, overstated it up to 4x (the bound's own segment matters most where a marker
    sits on a power edge)."""
    t0, t1 = float(ts[j]), float(ts[j + 1])
    # points before the segment add nothing; those after it add c (1 - a): one point at v = 1
    terms, whole = [], 0.0
    for p, coef in points:
        v = (p - t0) / (t1 - t0)
        if v >= 1.0:
            whole += coef
        elif v > 0.0:
            terms.append((v, coef))
    if whole:
        terms.append((1.0, whole))
    var = 0.0
    for i, (v, cv) in enumerate(terms):
        var += cv * cv * (v**3 / 3.0 - v**4 / 4.0)  # var((v - a)+)
        for w, cw in terms[i + 1 :]:
            lo, hi = min(v, w), max(v, w)
            var += 2.0 * cv * cw * (lo * lo * hi / 2.0 - lo**3 / 6.0 - v * v * w * w / 4.0)
    return max(var, 0.0)


def _window_share_var(s0: float, s1: float) -> float:
    """Square error, per (window length x power change)^2, of the share [s0, s1] of a window
    (fractions of its length) given linearly in time, when power changes once inside the
    window at one of the interval's bounds: markers sit where the training loop changes
    phase, and so does power. A change at t errs by |[s0, s1] & [0, t]| - (s1 - s0) t: by
    (s1 - s0) s0 at t = s0, by (s1 - s0)(1 - s1) at t = s1; the larger is taken. For one
    bound (s0 = 0) that is s1 (1 - s1): a change that a power reading would have placed, had
    there been one, shared out linearly instead."""
    s0, s1 = min(max(s0, 0.0), 1.0), min(max(s1, 0.0), 1.0)
    ds = max(s1 - s0, 0.0)
    return (ds * max(s0, 1.0 - s1)) ** 2


def _timing_var(m: Model, at_a: dict[int, float], at_b: dict[int, float]) -> float:
    """Variance of E(b) - E(a) from the update moments (counter.refine_phase). Each anchor's
    error has a part of its own and a part shared with others: for anchors the brackets
    alone place (uniform in the bracket), what timing_indep says is common to all of them
    (phase-locked sampling); for anchors the counter's periodicity pinned, the grid estimate,
    the middle of an intersection of brackets: two pinned anchors whose intersections end at
    the same brackets (the same low end, the same high end) share that end's error, half the
    correlation per shared end, and less the further apart they are (a bracket moved on by
    more periods carries more of the period's error; at most the share of PHASE_WINDOW_S
    their windows of brackets overlap); at least the common share timing_indep measured.
    Shared errors cancel between the two bounds. (The overlap alone said 0.70 for adjacent
    updates at 21.7 ms on the simulator, which measured 0.57-0.61; this says 0.64-0.65.)"""
    c = m.counter
    coef = dict(at_b)
    for k, v in at_a.items():
        coef[k] = coef.get(k, 0.0) - v
    if not coef:
        return 0.0
    var = common = 0.0
    pinned = []
    for k, v in coef.items():
        var += v * v * float(c.var_own[k])
        s = v * math.sqrt(float(c.var_grid[k]))
        if c.refined[k]:
            pinned.append((int(c.src_lo[k]), int(c.src_hi[k]), s, float(c.tau[k])))
        else:
            common += s
    floor = 1.0 - c.timing_indep
    for i, (lo_i, hi_i, si, ti) in enumerate(pinned):
        var += si * si
        for lo_j, hi_j, sj, tj in pinned[i + 1 :]:
            shared = 0.5 * (lo_i == lo_j) + 0.5 * (hi_i == hi_j)
            rho = max(floor, min(shared, 1.0 - abs(ti - tj) / PHASE_WINDOW_S))
            var += 2.0 * rho * si * sj
    return var + common * common


def _partial_coverage(m: Model, a: float, b: float) -> tuple[float, float]:
    """The unobserved-window term of [a, b] (bound, variance; see model._partial_coverage).
    The bound takes every window touched whole. The variance: each window's error about its
    lag-corrected share (model._part_time_lag), a window at either end of [a, b] times the
    part of it inside squared (its error is shared out with its increment); and the
    correction's own error once: it takes each change to be in an unseen part, and for one in
    a seen part it is off by up to its own size, which over the windows wholly between the
    ends telescopes to (1 - f) T / 2 x the net change of level across them: what the window
    before them and their first window read against their last and the window after (the
    larger difference of the four: either may hold a change of its own)."""
    c = m.counter
    if c.pc_var is None:
        return 0.0, 0.0
    n = len(c.pc_sum) - 1
    lo = min(max(int(c.tau.searchsorted(a, side="right")) - 1, 0), n)
    hi = min(max(int(c.tau.searchsorted(b, side="left")), lo), n)
    var = float(c.pc_var[hi] - c.pc_var[lo])
    for r, part in _partial_windows(c, a, b, lo, hi):
        var += (part * part - 1.0) * float(c.pc_var[r + 1] - c.pc_var[r])
    if hi - lo >= 3:  # windows lo + 1 .. hi - 2 wholly inside, between the end windows
        tau, value = c.tau, c.value
        mean = [
            float(value[r + 1] - value[r]) / max(float(tau[r + 1] - tau[r]), 1e-9)
            for r in (lo, lo + 1, hi - 2, hi - 1)
        ]
        change = max(abs(mean[2] - mean[0]), abs(mean[2] - mean[1]),
                     abs(mean[3] - mean[0]), abs(mean[3] - mean[1]))  # fmt: skip
        window = float(tau[hi - 1] - tau[lo + 1]) / (hi - lo - 2)
        var += (c.pc_lag * window * change) ** 2
    return float(c.pc_sum[hi] - c.pc_sum[lo]), max(var, 0.0)


def _partial_windows(c, a: float, b: float, lo: int, hi: int):
    """(window, share of it inside [a, b]) for the windows at the ends of [lo, hi)."""
    out = []
    for r in {lo, hi - 1}:
        if 0 <= r < len(c.tau) - 1 and r < hi:
            t0, t1 = float(c.tau[r]), float(c.tau[r + 1])
            if t1 > t0:
                part = (min(b, t1) - max(a, t0)) / (t1 - t0)
                out.append((r, min(max(part, 0.0), 1.0)))
    return out


def _bridged_u(m: Model, spec: CounterSpec, a: float, b: float) -> float:
    """Energy bridged across a counter reset is a power integral (or a rate) over the bridged
    window, readings missing inside it included: give it a bound that covers that guess. A
    restarted counter also starts a fresh update grid: its first increment may hold up to one
    period of energy the bridge already counted."""
    c, total = m.counter, 0.0
    for r in c.reset_windows:  # rare
        t0, t1 = float(c.tau[r]), float(c.tau[r + 1])
        if not (t0 < b and t1 > a):
            continue
        bridge = float(c.value[r + 1] - c.value[r])
        if m.power is None:
            total += 0.5 * bridge
            continue
        gap_len, _ = gap_overlap(m, t0, t1)
        total += 0.5 * m.power.max_w * gap_len + EXTRAPOLATION_REL * bridge
        total += float(c.window_max_w[r]) * spec.update_s if r < len(c.window_max_w) else 0.0
        total += float(c.window_shape_j[r]) if r < len(c.window_shape_j) else 0.0
    return total


def _in_gap(m: Model, x: float) -> bool:
    k = int(m.gap_end.searchsorted(x, side="left"))
    return k < len(m.gap_end) and m.gap_start[k] < x


def _crosses_reset(m: Model, a: float, b: float) -> bool:
    c = m.counter
    return any(c.tau[r] < b and c.tau[r + 1] > a for r in c.reset_windows)  # rare


def _avg_max_power(m: Model, energy: float, a: float, b: float):
    p = m.power
    if p is None:
        return (energy / (b - a) if b > a else None), None
    at_a, at_b = _power_at(m, a), _power_at(m, b)
    ja, jb = int(p.ts.searchsorted(a, side="right")), int(p.ts.searchsorted(b, side="left"))
    peak = max(at_a, at_b, float(p.pw[ja:jb].max())) if jb > ja else max(at_a, at_b)
    return (energy / (b - a) if b > a else at_a), peak


def _power_at(m: Model, x: float) -> float:
    ts, pw = m.power.ts, m.power.pw
    if x <= ts[0] or len(ts) == 1:
        return float(pw[0])
    if x >= ts[-1]:
        return float(pw[-1])
    j = int(ts.searchsorted(x, side="right")) - 1
    t0, p0 = float(ts[j]), float(pw[j])
    return p0 + (float(pw[j + 1]) - p0) * (x - t0) / (float(ts[j + 1]) - t0)
