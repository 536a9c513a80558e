"""A simulated GPU whose true energy is known, for the energy-attribution tests and benchmark.

Truth: power is piecewise linear on a 1 ms grid (idle / busy / all-reduce levels joined by
ramps, plus smooth noise), so the energy up to any moment has a closed form, computed here
without any code under test. The device reports what an H100 does where it matters: instant
power sampled every `period_s` at jittered times, a counter holding the exact energy up to its
last update tick (every `update_s`) floored to 1 mJ on top of an offset, or a power average
over the last second updated on those ticks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from collector.energy.timeline import Sample

T0_NS = 1_700_000_000_123_456_789  # a realistic wall-clock origin: ns must survive as ints
GRID_S = 0.001
# How long a change of power level takes: 8 ms by default; GRID_S (1 ms) is as sharp as the grid
# allows, an instant edge such as a square wave's
RAMP_S = 0.008


def to_ns(t_s: float) -> int:
    return T0_NS + round(t_s * 1e9)


def to_s(t_ns: int) -> float:
    return (t_ns - T0_NS) / 1e9


@dataclass(frozen=True)
class Truth:
    power_w: np.ndarray  # at k * GRID_S
    cum_j: np.ndarray  # exact energy from 0 to k * GRID_S

    @property
    def duration_s(self) -> float:
        return (len(self.power_w) - 1) * GRID_S

    def power(self, t_s):
        return np.interp(t_s, np.arange(len(self.power_w)) * GRID_S, self.power_w)

    def energy_to(self, t_s):
        t = np.clip(np.asarray(t_s, dtype=float), 0.0, self.duration_s)
        k = np.minimum((t / GRID_S).astype(np.int64), len(self.power_w) - 2)
        d = t - k * GRID_S
        p0, p1 = self.power_w[k], self.power_w[k + 1]
        return self.cum_j[k] + p0 * d + (p1 - p0) * d * d / (2 * GRID_S)

    def energy(self, a_ns: int, b_ns: int) -> float:
        return float(self.energy_to(to_s(b_ns)) - self.energy_to(to_s(a_ns)))


@dataclass(frozen=True)
class Workload:
    truth: Truth
    steps: list[tuple[int, int]]  # (start_ns, end_ns): a step runs until the next one starts
    epochs: list[tuple[int, int]]


def make_workload(
    seed: int = 0, epochs: int = 3, steps_per_epoch: int = 30, ramp_s: float = RAMP_S
) -> Workload:
    """Idle lead-in, then epochs of steps (busy compute, then an all-reduce dip), each epoch
    followed by an evaluation phase and idle. Markers sit exactly on the power edges."""
    rng = np.random.default_rng(seed)
    changes: list[tuple[float, float]] = [(0.0, 60.0)]
    t = 2.0
    steps, epoch_bounds = [], []
    for _ in range(epochs):
        epoch_start = t
        for _ in range(steps_per_epoch):
            busy, dip = rng.uniform(0.12, 0.45), rng.uniform(0.03, 0.12)
            changes += [(t, rng.uniform(260, 330)), (t + busy, rng.uniform(140, 200))]
            steps.append((to_ns(t), to_ns(t + busy + dip)))
            t += busy + dip
        epoch_bounds.append((to_ns(epoch_start), to_ns(t)))
        changes += [(t, 200.0), (t + 0.8, 70.0)]
        t += 1.5
    return Workload(_truth(changes, t + 1.0, rng, ramp_s=ramp_s), steps, epoch_bounds)


def _truth(
    changes: list[tuple[float, float]],
    end_s: float,
    rng,
    noise_rel: float = 0.03,
    ramp_s: float = RAMP_S,
):
    grid = np.arange(0.0, end_s, GRID_S)
    knots_t, knots_p = [], []
    prev = changes[0][1]
    for when, level in changes:
        knots_t += [when, when + ramp_s]
        knots_p += [prev, level]
        prev = level
    clean = np.interp(grid, knots_t, knots_p)
    noise_t = np.arange(0.0, grid[-1] + 0.005, 0.005)
    noise = np.interp(grid, noise_t, rng.normal(0.0, noise_rel, len(noise_t)))
    power = clean * (1.0 + noise)
    cum = np.concatenate(([0.0], np.cumsum(0.5 * (power[1:] + power[:-1]) * GRID_S)))
    return Truth(power, cum)


def make_load(
    kind: str, seed: int = 0, duration_s: float = 120.0, ramp_s: float = RAMP_S
) -> Workload:
    """Loads that stress a sensor: "square" is a 100 ms square wave (60 / 300 W) phase-locked to
    the counter's windows (tick phase 37.1 ms as readings() uses: high in each window's first
    half); "random" holds random levels (60-350 W) for random times (mean 60 ms). Steps are
    back to back (0.05-0.6 s), an epoch every 20 s."""
    rng = np.random.default_rng(seed)
    changes: list[tuple[float, float]] = [(0.0, 60.0)]
    t = 1.0
    if kind == "square":
        t = 1.0371
        while t < duration_s:
            changes += [(t, 300.0), (t + 0.05, 60.0)]
            t += 0.1
    elif kind == "random":
        while t < duration_s:
            changes.append((t, rng.uniform(60.0, 350.0)))
            t += rng.exponential(0.06)
    else:
        raise ValueError(f"unknown load {kind!r}")
    steps, epochs = [], []
    t = 2.0
    while t < duration_s - 20.0:
        start = t
        while t < start + 20.0:
            length = rng.uniform(0.05, 0.6)
            steps.append((to_ns(t), to_ns(t + length)))
            t += length
        epochs.append((to_ns(start), to_ns(t)))
    return Workload(_truth(changes, duration_s + 1.0, rng, 0.01, ramp_s), steps, epochs)


def readings(
    truth: Truth,
    seed: int = 1,
    *,
    period_s: float = 0.02,
    jitter_s: float = 0.004,
    update_s: float = 0.1,
    tick_phase_s: float = 0.0371,
    tick_jitter_s: float = 0.0,
    power: str | None = "instant",  # "instant" | "avg1s" | None
    counter: bool = True,
    offset_j: float = 98765.432,
    resolution_j: float = 0.001,
    reload_s: float | None = None,
    coverage: float = 1.0,
    power_lag_s: float = 0.0,
    avg_every: int = 0,
) -> list[Sample]:
    """Readings of `truth`. reload_s: a driver reload then, after which the counter restarts
    from 0 and counts the energy since the reload (the grid of ticks goes on). coverage < 1: a
    part-time sensor (A100/H100, Yang et al. SC24) that observes only the first `coverage` of
    each counter window and scales it up; instant power is then that window's scaled mean.
    power_lag_s: instant power shows the device that much late. avg_every k: every k-th
    reading's instant power fails and the 1 s average stands in (flagged power_from_avg)."""
    rng = np.random.default_rng(seed)
    nominal = np.arange(0.0, truth.duration_s - 0.01, period_s)
    t_ns = [to_ns(t) for t in nominal + rng.uniform(0.0, jitter_s, len(nominal))]
    t_s = np.array([to_s(t) for t in t_ns])
    ticks = np.arange(tick_phase_s, truth.duration_s + update_s, update_s)
    ticks = ticks + rng.uniform(-tick_jitter_s, tick_jitter_s, len(ticks))
    k = np.searchsorted(ticks, t_s, side="right") - 1
    tick_s = np.where(k >= 0, ticks[np.maximum(k, 0)], 0.0)
    tick_e = truth.energy_to(tick_s)
    if coverage < 1.0:
        seen = _part_time(truth, ticks, coverage)
        tick_e = np.where(k >= 0, seen[np.maximum(k, 0)], 0.0)
    quantized = offset_j + np.floor(tick_e / resolution_j) * resolution_j
    if reload_s is not None:
        since = np.maximum(tick_e - truth.energy_to(reload_s), 0.0)
        since = np.where(tick_s > reload_s, since, 0.0)
        restarted = np.floor(since / resolution_j) * resolution_j
        quantized = np.where(t_s >= reload_s, restarted, quantized)
    if power == "instant" and coverage < 1.0:
        window_e = np.diff(np.concatenate(([0.0], _part_time(truth, ticks, coverage))))
        window_s = np.diff(np.concatenate(([0.0], ticks)))
        pw = np.where(k >= 0, (window_e / window_s)[np.maximum(k, 0)], truth.power(t_s))
    elif power == "instant":
        pw = truth.power(np.maximum(t_s - power_lag_s, 0.0))
    window = np.minimum(1.0, tick_s)
    avg = (tick_e - truth.energy_to(tick_s - window)) / np.where(window > 0, window, 1.0)
    avg = np.where(window > 0, avg, truth.power(tick_s))
    from_avg = np.zeros(len(t_ns), dtype=bool)
    if power == "avg1s":  # as NVML reads a GPU without instant power: every reading flagged
        pw, from_avg[:] = avg, True
    elif power is None:
        pw = [None] * len(t_ns)
    elif avg_every:
        from_avg[::avg_every] = True
        pw = np.where(from_avg, avg, pw)
    return [
        Sample(t, None if p is None else float(p), float(c) if counter else None, bool(a))
        for t, p, c, a in zip(t_ns, pw, quantized, from_avg, strict=True)
    ]


def _part_time(truth: Truth, ticks: np.ndarray, coverage: float) -> np.ndarray:
    """What a part-time sensor's counter holds at each tick: per window, the energy of its
    first `coverage` share, scaled by 1 / coverage."""
    starts = np.concatenate(([0.0], ticks[:-1]))
    seen = truth.energy_to(starts + coverage * (ticks - starts)) - truth.energy_to(starts)
    return np.cumsum(seen / coverage)


def linear_counter_energy(samples: list[Sample], a_ns: int, b_ns: int) -> float:
    """The baseline to beat: the counter linearly interpolated between readings."""
    t = np.array([to_s(s.time_ns) for s in samples])
    c = np.array([s.energy_j for s in samples])
    ea, eb = np.interp([to_s(a_ns), to_s(b_ns)], t, c)
    return float(eb - ea)


def windows(workload: Workload, length_s: float, count: int, seed: int) -> list[tuple[int, int]]:
    """Intervals of one length at random places inside the epochs (half of them starting on a
    step boundary, where the power changes fastest)."""
    rng = np.random.default_rng(seed)
    lo, hi = to_s(workload.epochs[0][0]), to_s(workload.epochs[-1][1]) - length_s
    out = []
    for i in range(count):
        if i % 2:
            start = to_s(workload.steps[rng.integers(len(workload.steps))][0])
            start = min(start, hi)
        else:
            start = rng.uniform(lo, hi)
        out.append((to_ns(start), to_ns(start + length_s)))
    return out
