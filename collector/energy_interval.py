"""One interval's energy, cross-check, uncertainty, coverage and flags from a Model."""

from __future__ import annotations

import math

from collector.energy_model import EXTRAPOLATION_REL, Model, energy_at, gap_overlap
from collector.energy_types import CounterSpec, IntervalEnergy


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
        power_u = _power_uncertainty(m, spec, a2, b2)
        power_u += 0.5 * p.max_w * gap_len  # power inside a gap is a guess
    if c is not None and c.tc_first <= a2 and b2 <= c.tc_last:
        ea, eb = energy_at(m, a2), energy_at(m, b2)
        energy, source = eb - ea, "counter"
        u = _counter_bound_u(m, spec, a2, ea) + _counter_bound_u(m, spec, b2, eb)
        if _crosses_reset(m, a2, b2):
            flags.add("counter_reset")
        if power_j is not None:
            tol = spec.disagree_rel * abs(energy) + spec.disagree_abs_j + u + power_u
            if abs(energy - power_j) > tol:
                flags.add("disagree")
    elif power_j is not None:
        energy, source, u = power_j, "power", power_u
        flags.add("no_counter")
    else:
        return IntervalEnergy(
            a_ns, b_ns, None, "none", None, 0.0, None, None, coverage, frozenset(flags)
        )
    if b2 == a2:
        energy, u = 0.0, 0.0
    avg, peak = _avg_max_power(m, energy, a2, b2)
    return IntervalEnergy(
        a_ns, b_ns, energy, source, power_j, float(u), avg, peak, coverage, frozenset(flags)
    )


def _local_power(m: Model, x: float) -> tuple[float, float, float]:
    """Power readings around x: (higher of the two, |their difference|, their spacing)."""
    ts, pw = m.power.ts, m.power.pw
    if len(ts) == 1:
        return float(pw[0]), 0.0, 0.0
    j = min(max(int(ts.searchsorted(x, side="right")) - 1, 0), len(ts) - 2)
    p0, p1 = float(pw[j]), float(pw[j + 1])
    return max(p0, p1), abs(p1 - p0), float(ts[j + 1] - ts[j])


def _edges_between(m: Model, x0: float, x1: float) -> float:
    """Worst-case trapezoid error from power edges between x0 and x1 (root-sum-square)."""
    ts, q = m.power.ts, m.power.edges
    lo = max(int(ts.searchsorted(min(x0, x1), side="right")) - 1, 0)
    hi = min(int(ts.searchsorted(max(x0, x1), side="left")), len(ts) - 1)
    return 0.5 * math.sqrt(max(float(q[hi] - q[lo]), 0.0))


def _power_uncertainty(m: Model, spec: CounterSpec, a: float, b: float) -> float:
    u = _edges_between(m, a, b)
    for x in (a, b):
        high, dp, dt = _local_power(m, x)
        u += 0.5 * dp * dt + 0.5 * high * spec.power_avg_s
    return u


def _counter_bound_u(m: Model, spec: CounterSpec, x: float, e_x: float) -> float:
    c = m.counter
    last = len(c.tau) - 1
    r = int(c.tau.searchsorted(x, side="right")) - 1
    if 0 <= r < last:
        h = max(float(c.half_width[r]), float(c.half_width[r + 1]))
        shape = float(c.window_shape_j[r])
        step = float(c.value[r + 1] - c.value[r])
        if _in_gap(m, x):  # nothing says when inside the window the energy went
            shape = step
        elif spec.power_avg_s > 0 and m.power is not None:  # a lagging average: ~linear share
            shape = 0.5 * step
        return float(c.window_max_w[r]) * h + shape + spec.resolution_j
    near = 0 if r < 0 else last
    if m.power is not None:
        high = _local_power(m, x)[0]
        if len(c.window_max_w):
            high = max(high, float(c.window_max_w[min(max(near - 1, 0), last - 1)]))
        shape = _edges_between(m, float(c.tau[near]), x)
    else:
        high, shape = abs(c.tail_scale if near else c.head_scale), 0.0
    extrapolated = EXTRAPOLATION_REL * abs(e_x - float(c.value[near]))
    return high * float(c.half_width[near]) + shape + extrapolated + spec.resolution_j


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
