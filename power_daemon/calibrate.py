"""Sensor calibration: measure each GPU's energy counter and instant power at start.

The figures energy attribution leans on (how often the counter advances, by how little, how
instant power lags it, whether the sensor sees all of the time) differ by architecture and
driver; assumed constants are wrong somewhere. So the daemon polls every GPU fast (every few
ms, for a second or two) before it starts sampling and measures:
- the counter's update period: the slope of a line through the moments its value changes
  (each between two polls) against the updates' numbers;
- its resolution: the smallest increment seen (an upper bound when every step is large);
- instant power's lag behind the counter: the shift that best matches the mean instant power
  over each counter window to the window's counter increment (only when the power varies
  enough to tell; None otherwise);
- whether the architecture is a known partial-coverage one (PARTIAL_COVERAGE below).

Partial coverage. Yang et al., "Part-time Power Measurements: nvidia-smi's Lack of Attention"
(SC24, arXiv:2312.02741) found that on A100 and H100 the power sensor integrates only about
25 ms of every 100 ms update window and scales that up, so load that changes faster than the
window (or in phase with it) is mis-measured by the counter itself. H200 shares H100's power
monitoring. A sim backend says for itself (SimParams.coverage_fraction).

Pure functions over (time, counter, power) arrays plus one polling loop; no NVML calls here.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

from power_daemon.config import DEFAULT_INTERVAL_MS, DaemonConfig
from power_daemon.model import DeviceKind, DeviceSpec

log = logging.getLogger(__name__)

# Architecture name fragments whose power sensor samples part of each window (Yang et al. SC24).
PARTIAL_COVERAGE = ("A100", "H100", "H200", "GH200")
MIN_UPDATES = 4  # counter changes needed before the period is trusted
POLL_S = 0.002
MAX_LAG_S = 0.3


@dataclasses.dataclass(frozen=True)
class SensorFacts:
    update_s: float | None  # None: too few updates seen to tell
    resolution_j: float | None
    instant_power_lag_s: float | None
    updates: int  # counter changes seen
    polls: int


def partial_coverage_arch(name: str) -> bool:
    upper = name.upper()
    return any(tag in upper for tag in PARTIAL_COVERAGE)


def measure(t_ns: Sequence[int], energy_j: Sequence[float], power_w: Sequence[float | None]):
    """SensorFacts from one device's fast polls (times increasing)."""
    t = (np.asarray(t_ns, dtype=np.int64) - int(t_ns[0])) / 1e9 if len(t_ns) else np.empty(0)
    e = np.asarray(energy_j, dtype=float)
    changes = np.flatnonzero(np.diff(e) != 0) + 1  # first poll showing a new value
    if len(changes) < 2:
        return SensorFacts(None, None, None, len(changes), len(t))
    resolution = _quantum(e[np.concatenate(([0], changes))])
    period = None
    if len(changes) >= MIN_UPDATES:
        # each update lies between the poll before its change and the poll showing it: a
        # line through those middles over the updates' numbers (a gap of two periods where an
        # update showed no change) beats the span of the first and last change, which is off
        # by a whole poll gap when polls come late (a busy GIL: 16 ms, the span then misses
        # by up to 10 % in 0.5 s), and the sampling-phase verdict needs the period to ~1 %
        mids = 0.5 * (t[changes - 1] + t[changes])
        gaps = np.diff(mids)
        count = np.concatenate(([0.0], np.cumsum(np.maximum(np.round(gaps / np.median(gaps)), 1))))
        period = float(np.polyfit(count, mids, 1)[0])
    lag = _instant_lag(t, e, power_w, changes)
    return SensorFacts(period, resolution, lag, len(changes), len(t))


def _quantum(values: np.ndarray) -> float | None:
    """The largest power of ten every value is a whole multiple of (NVML counts whole mJ):
    increments are far larger than the quantum, the values' last digits are not."""
    if len(values) < MIN_UPDATES:
        return None
    for q in (1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5, 1e-6):
        k = values / q
        if np.all(np.abs(k - np.round(k)) < 1e-3):
            return q
    return None


def _instant_lag(t, e, power_w, changes) -> float | None:
    p = np.array([np.nan if v is None else v for v in power_w], dtype=float)
    if len(changes) < MIN_UPDATES or not np.isfinite(p).any():
        return None
    ok = np.isfinite(p)
    tp, pv = t[ok], p[ok]
    edges = t[changes]
    counter_w = np.diff(e[changes]) / np.maximum(np.diff(edges), 1e-9)
    if min(np.std(counter_w), np.std(pv)) < 0.15 * max(abs(float(np.mean(counter_w))), 10.0):
        return None  # steady power: any shift fits
    cum = np.concatenate(([0.0], np.cumsum(0.5 * (pv[1:] + pv[:-1]) * np.diff(tp))))
    lags, errs = [], []
    for lag in np.arange(0.0, MAX_LAG_S + 1e-9, 0.005):
        lo, hi = edges[:-1] + lag, edges[1:] + lag
        inside = (lo >= tp[0]) & (hi <= tp[-1])
        if inside.sum() < MIN_UPDATES - 1:
            break
        mean_w = (np.interp(hi, tp, cum) - np.interp(lo, tp, cum)) / (hi - lo)
        lags.append(float(lag))
        errs.append(float(np.mean((mean_w[inside] - counter_w[inside]) ** 2)))
    if not errs:
        return None
    # a periodic load fits again one period later: the smallest lag that fits as well wins
    best = min(errs)
    return next(lag for lag, err in zip(lags, errs, strict=True) if err <= 1.1 * best + 1e-9)


def poll(read: Callable[[int], list], duration_s: float, poll_s: float = POLL_S):
    """Read every device as fast as poll_s allows for duration_s: per device index, lists of
    (time_ns, energy_j, power_w)."""
    out: dict[int, list[tuple[int, float | None, float | None]]] = {}
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        now = time.time_ns()
        for s in read(now):
            if not s.lost:
                out.setdefault(s.device, []).append((now, s.energy_j, s.power_w))
        time.sleep(poll_s)
    return out


def apply(spec: DeviceSpec, facts: SensorFacts, duration_s: float, backend: str) -> DeviceSpec:
    """The spec with measured figures where the measurement could tell, and how."""
    partial = spec.partial_coverage
    if backend != "sim":
        partial = partial or partial_coverage_arch(spec.name)
    how = f"measured: polled {duration_s:g} s, {facts.polls} polls, {facts.updates} updates"
    if facts.update_s is None:
        how = f"assumed: {facts.updates} counter updates in {duration_s:g} s are too few"
        return dataclasses.replace(spec, partial_coverage=partial, sensor_method=how)
    return dataclasses.replace(
        spec,
        energy_counter_update_s=facts.update_s,
        # the values only bound the quantum from above (steps may all be whole joules)
        energy_counter_resolution_j=min(
            x for x in (facts.resolution_j, spec.energy_counter_resolution_j, 1.0) if x
        ),
        instant_power_lag_s=facts.instant_power_lag_s,
        partial_coverage=partial,
        sensor_method=how + ("; partial-coverage architecture (Yang et al. SC24)"
                             if partial and not spec.partial_coverage else ""),
    )  # fmt: skip


def calibrate_devices(backend, devices: list[DeviceSpec], duration_s: float) -> list[DeviceSpec]:
    """The hook the daemon calls at start (DaemonConfig.calibrate_s > 0)."""
    gpus = [i for i, d in enumerate(devices) if d.kind == DeviceKind.GPU and d.has_energy_counter]
    if not gpus or duration_s <= 0:
        return devices
    try:
        polls = poll(backend.read, duration_s)
    except Exception as e:  # a backend hiccup must not stop the daemon: keep its figures
        log.warning("sensor calibration failed (%s); using the backend's figures", e)
        return devices
    out = list(devices)
    name = backend.name.split("+")[0]
    for i in gpus:
        rows = polls.get(i, [])
        rows = [r for r in rows if r[1] is not None]
        facts = measure([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        out[i] = apply(devices[i], facts, duration_s, name)
        log.info("sensor %s: %s", out[i].uuid, describe(out[i]))
    return out


def describe(d: DeviceSpec) -> str:
    period = d.energy_counter_update_s
    lag = d.instant_power_lag_s
    return (
        f"counter every {period * 1e3:.0f} ms" if period else "counter period unknown"
    ) + (
        f", resolution {d.energy_counter_resolution_j:g} J" if d.energy_counter_resolution_j
        else ""
    ) + (f", instant power lags {lag * 1e3:.0f} ms" if lag is not None else "") + (
        ", partial coverage" if d.partial_coverage else ""
    ) + f" ({d.sensor_method})"  # fmt: skip


# Sampling phase. The collector finds each counter update only within the bracket of the two
# readings around it, one interval wide. Update k of a counter advancing every P comes k P
# after update 0, so its bracket, moved back by k P, also holds update 0: the intersection of
# the brackets of the updates of the last ~1 s (collector/energy/counter.py refine_phase) is
# as narrow as the updates' phases on the reading grid, (k P) mod T, are spread. An interval
# that divides P (20 ms, 100 ms) puts every update at the same phase and nothing narrows; one
# that runs free (21.7 ms) puts them at every phase. refine_phase uses only brackets narrower
# than half the counter period, so slower readings pin nothing at all.
ASSUMED_COUNTER_PERIOD_S = 0.1  # NVML's total-energy counter where none was measured
MAX_PHASE_GAP = 0.25  # largest phase gap (share of the interval) that still pins the updates
PHASE_EPS = 1e-6  # phases this close (share of the interval) are one: float round-off


def phase_spread(interval_s: float, counter_period_s: float, window_s: float = 1.0) -> float:
    """The largest circular gap between the phases, on a grid of readings every interval_s,
    of the updates of a counter advancing every counter_period_s within one window_s, as a
    share of the interval: 1.0 when all updates fall at one phase (the interval divides the
    period: the collector knows each update only to +- half an interval), small when they
    spread (it pins each update to about gap x interval). A period/interval ratio within
    PHASE_EPS of a whole number counts as locked, whatever the round-off."""
    ratio = counter_period_s / interval_s
    n = max(1, int(window_s / counter_period_s + PHASE_EPS))
    if n == 1 or abs(ratio - round(ratio)) < PHASE_EPS * max(1.0, ratio):
        return 1.0
    phases = np.mod(np.arange(n) * ratio, 1.0)
    ticks = np.unique(np.mod(np.round(phases / PHASE_EPS), round(1 / PHASE_EPS))) * PHASE_EPS
    if len(ticks) == 1:
        return 1.0
    return float(np.max(np.diff(np.append(ticks, ticks[0] + 1.0))))


def phase_problem(interval_s: float, counter_period_s: float) -> str | None:
    """None when readings every interval_s pin the updates of this counter; else what goes
    wrong and the fix (doctor's fix and the daemon's start-up warning say the same)."""
    ms, period_ms = interval_s * 1e3, counter_period_s * 1e3
    if interval_s >= counter_period_s / 2:
        return (
            f"readings every {ms:g} ms are more than half the {period_ms:g} ms counter period: "
            "update moments cannot be pinned; "
            f"use --interval-ms {suggested_interval_ms(counter_period_s):g} {LEAVE_OUT}"
        )
    gap = phase_spread(interval_s, counter_period_s)
    if gap <= MAX_PHASE_GAP:
        return None
    where = (
        f"the same phase of each {period_ms:g} ms counter update" if gap >= 1.0
        else f"nearly the same phase of each {period_ms:g} ms counter update" if gap >= 0.75
        else f"too few phases of successive {period_ms:g} ms counter updates"
    )  # fmt: skip
    return (
        f"readings every {ms:g} ms fall at {where}: "
        f"update moments known only to +-{gap * ms / 2:.3g} ms; "
        f"use --interval-ms {suggested_interval_ms(counter_period_s):g} {LEAVE_OUT}"
    )


LEAVE_OUT = "(or leave --interval-ms out: serve picks it)"
# Updates of a counter period of n + SPREAD intervals step by SPREAD of an interval: 0.59
# keeps clear of the 1/2 and 2/3 steps that cycle through two or three phases even when the
# period is measured 1 ms off (searched over 97-102 ms periods, +-1 ms: every second's updates
# then leave no phase gap over 0.20 of the interval; the golden 0.618 is 1 ms from 2/3).
SPREAD = 0.59


def spread_interval_ms(counter_period_s: float, near_ms: float = DEFAULT_INTERVAL_MS) -> float:
    """The interval near near_ms (0.01 ms steps) that puts a counter period of counter_period_s
    at n + SPREAD intervals (n >= 2: under half the period), so that the updates of every
    second fall at well-spread phases of the readings. 21.7 ms does that for a 100 ms counter;
    for one of 97-98 or 101-102 ms it puts them near half a reading apart (two phases in turn)."""
    n = max(2, round(counter_period_s * 1e3 / near_ms - SPREAD))
    return round(counter_period_s * 1e3 / (n + SPREAD), 2)


def suggested_interval_ms(counter_period_s: float) -> float:
    """What a fix names: the default where it spreads this counter's updates, else
    spread_interval_ms."""
    default_s = DEFAULT_INTERVAL_MS / 1e3
    if (
        default_s < counter_period_s / 2
        and phase_spread(default_s, counter_period_s) <= MAX_PHASE_GAP
    ):
        return DEFAULT_INTERVAL_MS
    return spread_interval_ms(counter_period_s)


MAX_TUNE = 1.5  # serve moves an interval it was not given at most this factor either way


def sampling_config(config: DaemonConfig, devices: Sequence[DeviceSpec]) -> DaemonConfig:
    """The config the daemon samples with once its GPUs are calibrated: the interval tuned to
    their counter (tuned_interval_ms) where the user did not choose one (tune_interval)."""
    if not config.tune_interval:
        return config
    tuned = tuned_interval_ms(config.interval_ms, devices)
    return config if tuned == config.interval_ms else dataclasses.replace(config, interval_ms=tuned)


def tuned_interval_ms(interval_ms: float, devices: Sequence[DeviceSpec]) -> float:
    """The interval the daemon samples at when the user did not choose one
    (DaemonConfig.tune_interval): interval_ms, unless it cannot pin the updates of the counter
    period calibration measured (the GPUs' median); then spread_interval_ms for that period,
    if within MAX_TUNE of interval_ms (a counter measured to advance every few ms, e.g. a
    driver or stand-in library that updates it on every read, would otherwise have the daemon
    sample at a kHz; it keeps the interval and the start-up warning says why)."""
    measured = [
        d.energy_counter_update_s for d in devices
        if d.kind == DeviceKind.GPU and d.has_energy_counter and d.energy_counter_update_s
        and d.sensor_method.startswith("measured")
    ]  # fmt: skip
    if not measured:
        return interval_ms
    period = float(np.median(measured))
    if phase_problem(interval_ms / 1e3, period) is None:
        return interval_ms
    tuned = spread_interval_ms(period, interval_ms)
    return tuned if interval_ms / MAX_TUNE <= tuned <= interval_ms * MAX_TUNE else interval_ms


def counter_periods(devices: Sequence[DeviceSpec]) -> dict[tuple[float, str], list[int]]:
    """The GPUs with an energy counter by (update period, to 0.1 ms, and its source:
    "measured", "backend's figure" or "assumed" ASSUMED_COUNTER_PERIOD_S where neither knew).
    GPUs whose periods round to the same whole ms share one sampling-phase verdict, at their
    mean period: calibration measures each to a fraction of a ms."""
    groups: dict[tuple[int, str], list[tuple[int, float]]] = {}
    for d in devices:
        if d.kind != DeviceKind.GPU or not d.has_energy_counter:
            continue
        period = d.energy_counter_update_s or ASSUMED_COUNTER_PERIOD_S
        source = (
            "measured" if d.sensor_method.startswith("measured")
            else "backend's figure" if d.energy_counter_update_s else "assumed"
        )  # fmt: skip
        groups.setdefault((round(period * 1e3), source), []).append((d.vendor_index, period))
    return {
        (max(round(float(np.mean([p for _, p in g])), 4), 1e-4), source): [i for i, _ in g]
        for (_, source), g in groups.items()
    }


def phase_warnings(interval_s: float, devices: Sequence[DeviceSpec]) -> list[str]:
    """One line per counter period that readings every interval_s cannot pin (the daemon logs
    them at start, after calibration); none for the default against NVML's counters."""
    out = []
    for (period, _), gpus in counter_periods(devices).items():
        if problem := phase_problem(interval_s, period):
            out.append(f"gpu {', '.join(map(str, gpus))}: {problem}")
    return out
