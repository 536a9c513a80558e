"""`power-daemon doctor`: what this node's sensors and scheduler allow, item by item.

One command a cluster admin runs on a node first. Each check gives a verdict (ok / degraded /
missing), what was found, and the fix where there is one. Checks build the same backends the
daemon would (DaemonConfig), so the answers hold for `serve` with the same options.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np

from power_daemon.backends.base import Backend
from power_daemon.backends.factory import build_backend, node_hostname
from power_daemon.calibrate import (
    calibrate_devices,
    counter_periods,
    describe,
    partial_coverage_arch,
    phase_problem,
    phase_spread,
    sampling_config,
)
from power_daemon.config import DaemonConfig
from power_daemon.errors import BackendUnavailable
from power_daemon.model import DeviceKind, DeviceSpec
from power_daemon.sampler import Sampler

OK, DEGRADED, MISSING = "ok", "degraded", "missing"
CLOCKSOURCE = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
FAST_CLOCKS = ("tsc", "kvm-clock", "arch_sys_counter", "hyperv_clocksource_tsc_page")


@dataclasses.dataclass(frozen=True)
class Check:
    item: str
    verdict: str  # ok | degraded | missing
    detail: str
    fix: str = ""


def run_checks(
    config: DaemonConfig, calibrate_s: float = 1.5, jitter_s: float = 2.0
) -> list[Check]:
    checks = [_nvml()]
    try:
        backend = build_backend(dataclasses.replace(config, rapl="off"))
    except BackendUnavailable as e:
        return [*checks, Check("backend", MISSING, str(e), "use --backend sim to try it")]
    try:
        checks.append(Check("driver", OK, f"{backend.name} {backend.driver_version or '-'}"))
        devices = calibrate_devices(backend, backend.devices(), calibrate_s)
        checks += _gpus(backend, devices)
        sampled = sampling_config(config, devices)  # what serve would sample at
        checks += _phase(sampled.interval_ms, devices, config.interval_ms)
        checks.append(_jitter(backend, sampled.interval_ns, jitter_s))
    finally:
        backend.close()
    checks.append(_rapl(config))
    checks.append(_clocksource())
    return checks


def _nvml() -> Check:
    try:
        import pynvml
    except ImportError:
        return Check("nvml", MISSING, "nvidia-ml-py is not installed", "pip install nvidia-ml-py")
    from power_daemon.backends.nvml import NvmlBackend

    try:
        nvml = NvmlBackend()
    except BackendUnavailable as e:
        return Check("nvml", MISSING, str(e), "install the NVIDIA driver, or use --backend sim")
    try:
        n = len(nvml.devices())
        return Check("nvml", OK, f"{n} GPUs, driver {nvml.driver_version}, {pynvml.__name__}")
    finally:
        nvml.close()


def _gpus(backend: Backend, measured: list[DeviceSpec]) -> list[Check]:
    out = []
    for d in measured:
        if d.kind != DeviceKind.GPU:
            continue
        tag = f"gpu {d.vendor_index}"
        if not d.has_energy_counter:
            out.append(Check(f"{tag}: energy counter", MISSING, "no total-energy counter",
                             "energy comes from integrated power (pre-Volta GPUs)"))  # fmt: skip
        elif d.sensor_method.startswith("measured"):
            out.append(Check(f"{tag}: energy counter", OK, f"{d.name}: {describe(d)}"))
        else:
            out.append(Check(f"{tag}: energy counter", DEGRADED, f"{d.name}: {describe(d)}",
                             "run doctor while the GPU draws power (the counter barely moves)"))  # fmt: skip
        if d.has_instant_power:
            out.append(Check(f"{tag}: instant power", OK, "NVML_FI_DEV_POWER_INSTANT"))
        else:
            out.append(Check(f"{tag}: instant power", DEGRADED,
                             "only the driver's average power" if d.power_avg_window_s is None
                             else f"only nvmlDeviceGetPowerUsage ({d.power_avg_window_s:g} s average)",
                             "a newer driver (>= 535) reports instant power on Ampere and newer"))  # fmt: skip
        window = d.power_avg_window_s  # 0: nvmlDeviceGetPowerUsage is instantaneous (GA100, older)
        shown = "unknown" if window is None else "instantaneous" if window == 0 else f"{window:g} s"
        out.append(Check(f"{tag}: power-average window", DEGRADED if window is None else OK, shown))
        if d.partial_coverage:
            source = "sim" if backend.name.startswith("sim") else "architecture table"
            out.append(Check(
                f"{tag}: sensor coverage", DEGRADED,
                f"partial: the sensor samples ~25 ms of each 100 ms window ({source}; Yang et "
                "al. SC24)",
                "measure intervals of many windows (epochs, runs) or use the job-level mean "
                "step energy; steps shorter than a window cannot be measured alone",
            ))  # fmt: skip
        else:
            arch = "not a known partial-coverage architecture"
            if partial_coverage_arch(d.name):
                arch = "simulated with full coverage"
            out.append(Check(f"{tag}: sensor coverage", OK, f"full ({arch})"))
    if not out:
        out.append(
            Check("gpus", MISSING, "no GPU found", "check the driver and CUDA_VISIBLE_DEVICES")
        )
    return out


def _phase(interval_ms: float, devices: list[DeviceSpec], asked_ms: float) -> list[Check]:
    """Whether readings fall at every phase of each GPU's counter updates (calibrate.
    phase_spread): with an interval that divides the counter period, or one over half of it,
    the collector knows each update moment only to within an interval, and the energy of
    short steps blurs by as much. One line per counter period. asked_ms: the interval before
    serve's tuning (calibrate.tuned_interval_ms), named where it differs."""
    groups = counter_periods(devices)
    out = []
    for (period, source), gpus in groups.items():
        on = ", ".join(map(str, gpus))
        item = "sampling phase" if len(groups) == 1 else f"sampling phase (gpu {on})"
        gap = phase_spread(interval_ms / 1e3, period)
        how = "assumed, not measured" if source == "assumed" else source
        detail = (f"readings every {interval_ms:g} ms, counter every {period * 1e3:g} ms ({how}; "
                  f"gpu {on}): largest phase gap {gap * interval_ms:.1f} ms ({gap:.0%} of the "
                  "interval)")  # fmt: skip
        if interval_ms != asked_ms:
            detail += f"; serve tunes {asked_ms:g} ms to {interval_ms:g} ms for this counter"
        fix = phase_problem(interval_ms / 1e3, period)
        out.append(Check(item, OK if fix is None else DEGRADED, detail, fix or ""))
    return out


def _jitter(backend: Backend, interval_ns: int, seconds: float) -> Check:
    """Run the daemon's own sampler on the backend and measure the spacing of its ticks."""
    times: list[int] = []
    done = threading.Event()
    n = max(10, int(seconds * 1e9 / interval_ns))

    def tick() -> None:
        backend.read(time.time_ns())
        times.append(time.monotonic_ns())
        if len(times) >= n:
            done.set()

    sampler = Sampler(interval_ns, tick, name="doctor-sampler")
    sampler.start()
    done.wait(seconds * 3 + 5)
    sampler.close()
    if len(times) < 3:
        return Check("sampling jitter", MISSING, "the sampler did not tick", "check CPU load")
    gaps = np.diff(np.array(times)) / 1e6
    period = interval_ns / 1e6
    worst, p99 = float(gaps.max()), float(np.percentile(gaps, 99))
    detail = (f"{len(times)} ticks at {period:g} ms: p50 {np.median(gaps):.2f} ms, p99 "
              f"{p99:.2f} ms, worst {worst:.2f} ms, {sampler.skipped_ticks} skipped")  # fmt: skip
    if worst <= 2.5 * period:
        return Check("sampling jitter", OK, detail)
    return Check("sampling jitter", DEGRADED, detail,
                 "give the daemon a core (CPUAffinity / taskset) or a higher priority "
                 "(Nice=-5 in the unit); holes over 5x the median spacing are flagged 'gap'")  # fmt: skip


def _rapl(config: DaemonConfig) -> Check:
    from power_daemon.backends.rapl import RaplBackend

    try:
        rapl = RaplBackend(config.rapl_root, node_hostname(config), time.time_ns())
    except BackendUnavailable as e:
        return Check("rapl", MISSING, str(e), "grant the daemon's group read access to "
                     "energy_uj (deploy/ udev rule), or run without CPU/DRAM energy")  # fmt: skip
    try:
        return Check("rapl", OK, f"{len(rapl.devices())} zones under {config.rapl_root}")
    finally:
        rapl.close()


def _clocksource(path: Path = CLOCKSOURCE) -> Check:
    try:
        source = path.read_text().strip()
    except OSError as e:
        return Check("clock source", DEGRADED, f"unknown ({e.strerror or e})")
    if source in FAST_CLOCKS:
        return Check("clock source", OK, source)
    return Check("clock source", DEGRADED, f"{source}: slow to read, timestamps jitter",
                 "boot with clocksource=tsc where the TSC is stable")  # fmt: skip


def render(checks: list[Check], fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps({"checks": [dataclasses.asdict(c) for c in checks],
                           "verdict": overall(checks)}, indent=2)  # fmt: skip
    width = max(len(c.item) for c in checks)
    lines = []
    for c in checks:
        line = f"{c.verdict:9s} {c.item:{width}s}  {c.detail}"
        lines.append(line + (f"\n{'':9s} {'':{width}s}  fix: {c.fix}" if c.fix and c.verdict != OK
                             else ""))  # fmt: skip
    lines.append(f"overall: {overall(checks)}")
    return "\n".join(lines)


def overall(checks: list[Check]) -> str:
    verdicts = {c.verdict for c in checks}
    return MISSING if MISSING in verdicts else DEGRADED if DEGRADED in verdicts else OK
