"""When did a stepped energy counter update? (pure numpy; times in float seconds)

A total-energy counter (NVML: mJ since driver load) advances in steps, about every
`update_s`: a reading at t shows the exact energy up to the last update at or before t, not up
to t. So readings with equal values form a *run*, and the update that produced a run's value
happened after the previous run's last reading and at or before the run's first reading; and,
since the counter advances at least once per period, no earlier than one period before that
first reading (this is what bounds it when readings are slower than the counter). Each run
yields one *anchor*: (estimated update moment, value), the moment being the middle of that
bracket and known to +- half its width. Anchors, not readings, are what E(t) is pinned to.

Narrowing the brackets by the counter's periodicity (refine_phase; CounterSpec.
pin_update_phase, on by default; it needs the PHASE_HISTORY_S of readings before an update,
which the join keeps and a collector replaying stored readings starts with): updates of a
stable period sit on a grid, so the brackets of the updates before one pin where it can be.
Locally (clocks drift), only from the past (a settled update never moves), and only where the
brackets agree with a stable period; else each update keeps its own bracket. It gains most
where sampling runs free against the counter (the daemon's default 21.7 ms against ~100 ms);
a sampler phase-locked to it (20 ms) gains only its own jitter.
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


# --- The update phase, from many brackets -------------------------------------------------
PHASE_WINDOW_S = 1.0  # past brackets that pin an update's phase (local: clocks drift)
MAX_PHASE_BRACKETS = 20  # at most this many of them (bounds the work per update)
MIN_PHASE_BRACKETS = 8  # fewer, and an update keeps its own bracket
CLEAN_S = 10.0  # no update is pinned before this long of brackets that all agree
PHASE_HISTORY_S = CLEAN_S + 2.0 * PHASE_WINDOW_S  # readings an update's pinning depends on


@dataclass(frozen=True, slots=True)
class Phase:
    """Update moments refined by the counter's periodicity (see refine_phase)."""

    tau_s: np.ndarray
    half_width_s: np.ndarray
    refined: np.ndarray  # bool: pinned by the brackets before it
    var_own_s2: np.ndarray  # error variance that is this update's own (its jitter)
    var_grid_s2: np.ndarray  # ... and that of the grid estimate, shared with its neighbours
    # Per pinned update: the brackets that set the low and the high end of its intersection
    # (indices of anchors; -1 where not pinned): two pinned updates whose ends come from the
    # same brackets share their grid errors (model: _timing_var)
    src_lo: np.ndarray | None = None
    src_hi: np.ndarray | None = None


def unpinned(a: Anchors, indep: float) -> Phase:
    """Every update uniform in its own bracket, indep of its error its own."""
    own = a.half_width_s**2 / 3.0
    return Phase(
        a.tau_s, a.half_width_s, np.zeros(len(a.tau_s), bool), indep * own, (1.0 - indep) * own
    )


def refine_phase(a: Anchors, update_s: float, jitter_s: float, indep: float) -> Phase:
    """Narrow each update's bracket with those of the updates before it (pure numpy).

    A counter that updates with a stable period T puts update k at g_k + e_k, g on a grid
    (g_k = g_j + (k - j) T) and |e| <= J; every bracket [lo_j, hi_j] then holds g_j +- J, so
    g_k lies in the intersection over j of [lo_j - J + m T, hi_j + J + m T] (m = k - j; T as
    the brackets of the last CLEAN_S show it, to a tolerance tol that widens each by m T tol:
    local_period), and update k within J of that. The brackets of a free-running sampler
    fall at every phase of the grid and their intersection is far narrower than one sampling
    interval; a sampler phase-locked to the counter gains only its own jitter. Only past
    brackets within PHASE_WINDOW_S are used (the host's and the GPU's clocks drift, so the
    grid holds only locally; and an update, once seen, never moves when later readings
    arrive: settled energy stays settled).

    J is checked against the data: where no grid passes through a window's brackets, half
    the overlap they miss is a lower bound on the jitter. With a sampler locked to the
    counter the brackets see only a part of it, so an update is pinned only where that
    bound stayed under a quarter of jitter_s (the sensor fact) for the last CLEAN_S, and J
    is the larger of jitter_s and four times the bound. A counter that strays from its grid
    (jitter, irregular updates) keeps the per-bracket model, as does an update with fewer
    than MIN_PHASE_BRACKETS narrow brackets (< T / 2, of updates numbered unambiguously:
    readings closer than ~0.35 T) behind it, or with less than CLEAN_S of brackets before
    it. The refined moment is the middle of what is left of its own bracket, its half-width
    that range's (never tighter than the brackets allow). Its variance: the grid's, uniform
    over the intersection itself (each bracket holds g_j + e_j, so the jitters of the ~10
    brackets shift it by J / sqrt(10) at most, well inside it: widening it by J as the bound
    does counted J again), plus its own jitter's (uniform +- J), at most uniform over the
    range. indep: the share of a bracket's error that is its own
    (model._timing_independence), for the updates not pinned.
    """
    tau, hw = a.tau_s, a.half_width_s
    fallback = unpinned(a, indep)
    lo, hi = tau - hw, tau + hw
    usable = np.flatnonzero((2.0 * hw < 0.5 * update_s) & ~a.reset)
    m_max = min(int(PHASE_WINDOW_S / update_s), MAX_PHASE_BRACKETS)
    if len(usable) <= MIN_PHASE_BRACKETS or m_max < MIN_PHASE_BRACKETS:
        return fallback
    ulo, uhi = lo[usable], hi[usable]
    mid, w = 0.5 * (ulo + uhi), uhi - ulo
    # number the updates: consecutive usable brackets are `link` updates apart, when that is
    # unambiguous (their distance within both half-widths, the jitter and the period's
    # tolerance of a whole number of periods); else a new chain starts
    span = np.diff(mid) / update_s
    link = np.rint(span)
    slack = 0.5 * (w[1:] + w[:-1]) + 2.0 * jitter_s + link * update_s * PERIOD_TOLERANCE
    ok = (link >= 1) & (np.abs(span - link) * update_s <= slack) & (slack < 0.4 * update_s)
    n = np.concatenate(([0.0], np.cumsum(np.where(ok, link, 0.0))))
    chain = np.concatenate(([0], np.cumsum(~ok)))
    period, tol = local_period(mid, w, n, chain, update_s, jitter_s)
    # intersect, for every usable update k, the brackets of k - 1 .. k - M moved on to it
    low, high = ulo.copy(), uhi.copy()
    src_lo, src_hi = np.arange(len(usable)), np.arange(len(usable))  # which bracket set each
    count = np.ones(len(usable), dtype=np.int64)
    for back in range(1, min(m_max, len(usable) - 1) + 1):
        reach = (n[back:] - n[:-back]) * period[back:]
        same = (chain[back:] == chain[:-back]) & (reach <= PHASE_WINDOW_S)
        widen = reach * tol[back:]
        up = same & (ulo[:-back] + reach - widen > low[back:])
        low[back:] = np.where(up, ulo[:-back] + reach - widen, low[back:])
        src_lo[back:] = np.where(up, np.arange(len(up)), src_lo[back:])
        down = same & (uhi[:-back] + reach + widen < high[back:])
        high[back:] = np.where(down, uhi[:-back] + reach + widen, high[back:])
        src_hi[back:] = np.where(down, np.arange(len(down)), src_hi[back:])
        count[back:] += same
    full = count >= MIN_PHASE_BRACKETS
    if not full.any():
        return fallback
    # How far the updates stray from the grid, from the data: where no grid passes through
    # all these brackets, each must be widened by half the overlap missing (a lower bound on
    # the jitter); J is twice the most missed within the last CLEAN_S, jitter_s at least
    miss = np.where(full, np.maximum(low - high, 0.0), 0.0)
    first = np.searchsorted(uhi, uhi - CLEAN_S, side="left")
    worst = _window_max(miss, first) if miss.any() else miss
    jit = np.maximum(2.0 * worst, jitter_s)
    # ... and only after CLEAN_S of brackets, enough to have seen it, and never where the
    # jitter seen comes near the sensor fact (a sampler locked to the counter sees only part
    # of it: a counter seen to stray is not trusted to keep to a grid)
    clean = (uhi - uhi[np.argmax(full)] >= CLEAN_S) & (worst <= 0.5 * jitter_s)
    a_s = np.maximum(ulo, low - 2.0 * jit)
    b_s = np.minimum(uhi, high + 2.0 * jit)
    good = full & clean & (a_s < b_s) & (b_s - a_s < w)
    idx = usable[good]
    tau, hw = tau.copy(), hw.copy()
    tau[idx] = 0.5 * (a_s[good] + b_s[good])
    hw[idx] = 0.5 * (b_s[good] - a_s[good])
    refined = np.zeros(len(tau), bool)
    refined[idx] = True
    # the update = grid (uniform in the brackets' intersection) + its own jitter (uniform
    # +- J): variances add, and together never more than uniform over what is left
    var_own, var_grid = fallback.var_own_s2.copy(), fallback.var_grid_s2.copy()
    total = hw[idx] ** 2 / 3.0
    grid = np.minimum(high - low, b_s - a_s)[good]
    var_own[idx] = np.minimum(jit[good] ** 2 / 3.0, total)
    var_grid[idx] = np.minimum(grid**2 / 12.0, total - var_own[idx])
    lo_of, hi_of = np.full(len(tau), -1), np.full(len(tau), -1)
    lo_of[idx], hi_of[idx] = usable[src_lo[good]], usable[src_hi[good]]
    return Phase(tau, hw, refined, var_own, var_grid, lo_of, hi_of)


PERIOD_MIN_UPDATES = 20  # updates behind a period fitted from the brackets (else: nominal)
PERIOD_MAX_OFF = 0.01  # a fitted period further than this from the nominal is not trusted
PERIOD_SIGMAS = 3.0  # the fitted period's tolerance, in standard errors


def local_period(mid, w, n, chain, update_s: float, jitter_s: float):
    """Per usable bracket k: (period, relative tolerance) for moving earlier brackets on to k.

    The nominal period (the daemon measured it in a second or two, or assumed it) is known to
    PERIOD_TOLERANCE; over the brackets of the last CLEAN_S the counter shows its own period
    far better: a least-squares line through the bracket middles against the update numbers
    (the same chain only, the brackets up to k only: causal, so a pinned moment never moves).
    Each middle errs by its bracket (uniform, w^2 / 12) and the update's jitter (J^2 / 3), so
    the slope's standard error is sqrt(mean of those / sum (n - mean n)^2); the tolerance is
    PERIOD_SIGMAS of it. Where fewer than PERIOD_MIN_UPDATES brackets are behind k, or the
    fit strays more than PERIOD_MAX_OFF from the nominal, the nominal and its tolerance stay."""
    size = len(mid)
    period = np.full(size, update_s)
    tol = np.full(size, PERIOD_TOLERANCE)
    if size < PERIOD_MIN_UPDATES:
        return period, tol
    idx = np.arange(size)
    new_chain = np.concatenate(([True], chain[1:] != chain[:-1]))
    chain_start = np.maximum.accumulate(np.where(new_chain, idx, 0))
    start = np.maximum(np.searchsorted(mid, mid - CLEAN_S, side="left"), chain_start)
    x, y = n - n[0], mid - mid[0]  # small numbers: the sums below difference well

    def window_sum(v):
        c = np.concatenate(([0.0], np.cumsum(v)))
        return c[idx + 1] - c[start]

    count = (idx - start + 1).astype(float)
    sx, sy = window_sum(x), window_sum(y)
    cxx = window_sum(x * x) - sx * sx / count
    cxy = window_sum(x * y) - sx * sy / count
    noise = window_sum(w * w / 12.0) / count + jitter_s**2 / 3.0
    fit = (count >= PERIOD_MIN_UPDATES) & (cxx > 0)
    slope = np.where(fit, cxy / np.where(fit, cxx, 1.0), update_s)
    fit &= np.abs(slope / update_s - 1.0) <= PERIOD_MAX_OFF
    err = PERIOD_SIGMAS * np.sqrt(noise / np.where(fit, cxx, 1.0)) / np.where(fit, slope, 1.0)
    period[fit] = slope[fit]
    tol[fit] = np.minimum(err[fit], PERIOD_MAX_OFF)
    return period, tol


def _window_max(x: np.ndarray, first: np.ndarray) -> np.ndarray:
    """out[i] = max(x[first[i] : i + 1]) (first non-decreasing, first[i] <= i)."""
    out = np.empty(len(x))
    # a sparse table of maxima over spans of 2^p: O(n log n), vectorised
    table = [x]
    span = 1
    while 2 * span <= len(x):
        prev = table[-1]
        table.append(np.maximum(prev[:-span], prev[span:]))
        span *= 2
    i = np.arange(len(x))
    length = i - first + 1
    p = np.floor(np.log2(length)).astype(np.int64)
    for level in np.unique(p):
        sel = p == level
        t, size = table[level], 1 << int(level)
        out[sel] = np.maximum(t[first[sel]], t[i[sel] - size + 1])
    return out
