"""Plain data in and out of energy attribution (re-exported by collector.energy.timeline)."""

from __future__ import annotations

import math
from dataclasses import dataclass

FLAGS = frozenset({"gap", "counter_reset", "disagree", "incomplete", "no_counter"})


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one device. power_w: instantaneous power where the driver has it (NVML
    POWER_INSTANT), else its average; energy_j: the total-energy counter, None without one;
    power_from_avg: this power_w is the driver's average (instant power failed or is absent)."""

    time_ns: int
    power_w: float | None
    energy_j: float | None
    power_from_avg: bool = False


@dataclass(frozen=True)
class CounterSpec:
    """What is known about a device's sensors, plus the cross-check policy."""

    update_s: float = 0.1  # how often the counter advances (NVML: ~100 ms)
    resolution_j: float = 0.001  # counter quantum (NVML: 1 mJ)
    update_jitter_s: float = 0.001  # how far an update may come late or early
    power_avg_s: float = 0.0  # window the reported power is averaged over (0 = instantaneous)
    # Window of the driver's average, for readings flagged power_from_avg (NVML: ~1 s).
    avg_window_s: float = 1.0
    # How far instant power lags the counter (measured by the daemon: DeviceInfo
    # instant_power_lag_s): power read at t describes t - lag.
    instant_power_lag_s: float = 0.0
    # Share of each counter window the power sensor observes (1 = all of it; A100/H100/H200
    # sample about a quarter, Yang et al. SC24): adds the unobserved-window term.
    coverage_fraction: float = 1.0
    # Pin the counter's update moments by its periodicity (counter.refine_phase). A pinned
    # moment depends on the PHASE_HISTORY_S of readings before it: the join keeps them when it
    # trims, and a collector replaying stored readings (collector/rebuild.py) starts that much
    # earlier, so intervals computed before and after a restart add up.
    pin_update_phase: bool = True
    disagree_rel: float = 0.05  # counter vs power integral: relative tolerance ...
    disagree_abs_j: float = 1.0  # ... plus this, plus both estimates' uncertainties


@dataclass(frozen=True)
class IntervalEnergy:
    """Energy of [start_ns, end_ns] on one device.

    energy_j covers the part of the interval the readings span: when the interval starts
    before the first or ends after the last reading it is flagged "incomplete", coverage < 1,
    and energy_j is the covered part only (never extrapolated); None when nothing is covered.
    uncertainty_j: half-width of a calibrated 95 % interval (energy_j +- uncertainty_j holds the
    true energy in ~95 % of intervals); bound_j: the near-worst-case bound it was derived from;
    bridged_j: the part of both that comes from energy bridged across counter resets (it does
    not telescope, so merging pieces keeps it); var_*: the variances uncertainty_j is made of
    (calibrated_u). See collector.energy.timeline (module docstring).
    """

    start_ns: int
    end_ns: int
    energy_j: float | None
    source: str  # "counter" | "power" | "none"
    power_integral_j: float | None
    uncertainty_j: float
    avg_power_w: float | None
    max_power_w: float | None
    coverage: float
    flags: frozenset[str]
    bound_j: float = 0.0
    bridged_j: float = 0.0
    var_bounds_j2: float = 0.0  # error variance from the two bounds (telescopes away inside)
    var_windows_j2: float = 0.0  # from every counter window inside (partial coverage: adds up)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


Z95 = 1.96  # two-sided 95 % of a normal error


def calibrated_u(bound_j: float, bridged_j: float, var_j2: float) -> float:
    """The 95 % half-width: 1.96 sigma, never above the worst-case bound, plus the bridged part
    (a bound: what a reset window used is not known better than that)."""
    return min(Z95 * math.sqrt(max(var_j2, 0.0)), bound_j - bridged_j) + bridged_j
