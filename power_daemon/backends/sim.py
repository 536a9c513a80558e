"""Simulated GPUs whose power follows the markers the daemon receives.

Per device: idle power with no run, `run_w` while a run is open on it (between RUN_START and
RUN_END, no step open), `busy_w` while a step is open (STEP_START..STEP_END). A change takes
effect at the marker's own time_ns when that is still after the last reading already emitted
(ranks send markers in batches, so they arrive tens of ms late), else at that reading: the sim
cannot change the past. Power ramps with a first-order time constant; seeded noise rides on top
(simtrace.py). Like a real H100 where it matters for
energy attribution:
- `power_w` is the exact instantaneous power (NVML_FI_DEV_POWER_INSTANT),
- `power_avg_w` is the mean power over the last `avg_window_s`, updated on counter ticks,
- `energy_j` advances only every `counter_period_s` (ticks at start_ns + k * period) and then
  holds a seeded offset plus the exact integral up to that tick, floored to 1 mJ.
Sensor modes (SimParams): `coverage_fraction` < 1 is a part-time sensor (A100/H100, Yang et
al. SC24): each window's energy is what its first fraction used, scaled up, and the counter,
the average and instant power all come from that (instant power = the last window's scaled
mean); `background_w` > 0 is a GPU that never idles: another job draws that (at 90 %
utilisation, high clocks) whenever no run is open on it.
Temperature rises with power toward ambient + k * P and cools toward ambient.
`true_energy_j` gives tests the exact energy of any interval.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field

from parawatt_proto.records import MarkerRec
from power_daemon import __version__
from power_daemon.backends.simtrace import Noise, PowerTrace
from power_daemon.config import SimParams
from power_daemon.model import DeviceKind, DeviceSpec, Sample

_GIB = float(1 << 30)


@dataclass
class _Gpu:
    spec: DeviceSpec
    trace: PowerTrace
    offset_mj: int
    tick_energy: deque[tuple[int, float]]  # (tick time, trace energy) of recent counter ticks
    steps: set[tuple[str, int]] = field(default_factory=set)  # (run_id, rank) with a step open
    runs: set[tuple[str, int]] = field(default_factory=set)
    tick: int = -1
    seen_j: float = 0.0  # part-time sensor: the energy it reports up to the last tick
    window_w: float = 0.0  # part-time sensor: the last window's scaled mean power
    counter_mj: int = 0
    avg_w: float = 0.0
    temp_c: float = 0.0
    temp_ns: int = 0
    temp_e_j: float = 0.0


def sim_uuid(seed: int, hostname: str, index: int) -> str:
    digest = hashlib.sha256(f"{seed}:{hostname}:{index}".encode()).digest()
    return f"sim-GPU-{uuid.UUID(bytes=digest[:16])}"


class SimBackend:
    name = "sim"
    driver_version = f"sim-{__version__}"

    def __init__(
        self, n_devices: int, params: SimParams, *, hostname: str, seed: int, start_ns: int
    ) -> None:
        self.params = params
        self.start_ns = start_ns
        self._period_ns = round(params.counter_period_s * 1e9)
        self._window_ns = round(params.avg_window_s * 1e9)
        self._lock = threading.Lock()
        self._last_ns = start_ns
        self._gpus = [self._make_gpu(i, hostname, seed) for i in range(n_devices)]
        self._by_uuid = {g.spec.uuid: g for g in self._gpus}

    def _make_gpu(self, i: int, hostname: str, seed: int) -> _Gpu:
        p = self.params
        rng = random.Random(f"{seed}:{hostname}:{i}")
        spec = DeviceSpec(
            uuid=sim_uuid(seed, hostname, i),
            name=p.name,
            kind=DeviceKind.GPU,
            vendor_index=i,
            power_limit_w=p.power_limit_w,
            memory_total_bytes=p.memory_total_bytes,
            has_energy_counter=True,
            has_instant_power=True,
            energy_counter_update_s=p.counter_period_s,
            energy_counter_resolution_j=0.001,
            power_avg_window_s=p.avg_window_s,
            pci_bus_id=f"00000000:{0x18 + i:02X}:00.0",
            partial_coverage=p.coverage_fraction < 1.0,
            sensor_method="sim: configured",
        )
        floor = self._floor_w()
        trace = PowerTrace(self.start_ns, floor, p.ramp_tau_s, Noise(rng, p.noise_w))
        window_ticks = math.ceil(p.avg_window_s / p.counter_period_s) + 1
        gpu = _Gpu(spec, trace, rng.randrange(10**6, 10**9), deque(maxlen=window_ticks))
        gpu.temp_c, gpu.temp_ns = p.ambient_c + p.thermal_c_per_w * floor, self.start_ns
        gpu.window_w = floor
        return gpu

    def devices(self) -> list[DeviceSpec]:
        return [g.spec for g in self._gpus]

    def read(self, now_ns: int) -> list[Sample]:
        with self._lock:
            self._last_ns = max(self._last_ns, now_ns)
            return [self._sample(i, g, now_ns) for i, g in enumerate(self._gpus)]

    def on_marker(self, marker: MarkerRec, now_ns: int) -> None:
        gpu = self._by_uuid.get(marker.device_uuid)
        if gpu is None:
            return
        key = (marker.run_id, marker.rank)
        with self._lock:
            kind = marker.kind
            if kind == "step_start":
                gpu.steps.add(key)
            elif kind == "step_end":
                gpu.steps.discard(key)
            elif kind == "run_start":
                gpu.runs.add(key)
            elif kind == "run_end":
                gpu.runs.discard(key)
                gpu.steps.discard(key)
            # Readings up to _last_ns are already out: a change can only start after them. A
            # time_ns ahead of the daemon's clock (a rank's bad clock) is held to now.
            at_ns = max(min(marker.time_ns, now_ns), self._last_ns)
            gpu.trace.set_target(at_ns, self._level(gpu))

    def canonical_uuid(self, uuid: str) -> str:
        return uuid

    def close(self) -> None:
        pass

    # -- for tests and benchmarks -------------------------------------------------------------

    def true_energy_j(self, uuid: str, start_ns: int, end_ns: int) -> float:
        """Exact energy the device used in [start_ns, end_ns] (ValueError before its history)."""
        with self._lock:
            return self._by_uuid[uuid].trace.integral_j(start_ns, end_ns)

    def true_power_w(self, uuid: str, t_ns: int) -> float:
        with self._lock:
            return self._by_uuid[uuid].trace.power_w(t_ns)

    def counter_tick_ns(self, t_ns: int) -> int:
        """Time of the last energy-counter update at or before t_ns."""
        return t_ns - (t_ns - self.start_ns) % self._period_ns

    def counter_offset_j(self, uuid: str) -> float:
        """The counter's value at start_ns (like NVML's: energy since 'driver load')."""
        return self._by_uuid[uuid].offset_mj / 1000.0

    # -- internals ----------------------------------------------------------------------------

    def _level(self, gpu: _Gpu) -> float:
        p = self.params
        return p.busy_w if gpu.steps else p.run_w if gpu.runs else self._floor_w()

    def _floor_w(self) -> float:
        """Power with no run open: idle, or idle plus another job's load (never idles)."""
        return min(self.params.idle_w + self.params.background_w, self.params.power_limit_w)

    def _sample(self, index: int, gpu: _Gpu, now_ns: int) -> Sample:
        t_ns = max(now_ns, self.start_ns)  # a wall clock stepped back must not break the physics
        self._update_counter(gpu, t_ns)
        p = self.params
        busy, in_run = bool(gpu.steps), bool(gpu.runs)
        other = p.background_w > 0 and not in_run  # another job's load
        busy = busy or other
        part_time = p.coverage_fraction < 1.0
        return Sample(
            device=index,
            time_ns=now_ns,
            power_w=gpu.window_w if part_time else gpu.trace.power_w(t_ns),
            power_avg_w=gpu.avg_w,
            energy_j=gpu.counter_mj / 1000.0,
            gpu_util_pct=90.0 if other else 97.0 if busy else 3.0 if in_run else 0.0,
            mem_util_pct=45.0 if busy else 1.0 if in_run else 0.0,
            memory_used_bytes=(0.3 * p.memory_total_bytes if busy or in_run else 0.5 * _GIB),
            temperature_c=round(gpu.temp_c, 3),
            sm_clock_mhz=1980.0 if busy else 1755.0 if in_run else 345.0,
            mem_clock_mhz=2619.0 if busy or in_run else 1593.0,
        )

    def _update_counter(self, gpu: _Gpu, now_ns: int) -> None:
        k = (now_ns - self.start_ns) // self._period_ns
        if k == gpu.tick:
            return
        if self.params.coverage_fraction < 1.0:
            self._part_time_windows(gpu, k)
        gpu.tick = k
        tick_ns = self.start_ns + k * self._period_ns
        e = gpu.trace.energy_j(tick_ns) if self.params.coverage_fraction >= 1.0 else gpu.seen_j
        gpu.counter_mj = gpu.offset_mj + math.floor(e * 1000.0)
        window_ns = min(self._window_ns, tick_ns - self.start_ns)
        if window_ns > 0:
            gpu.avg_w = (e - self._energy_at(gpu, tick_ns - window_ns)) / (window_ns / 1e9)
        else:
            gpu.avg_w = gpu.trace.power_w(tick_ns)
        gpu.tick_energy.append((tick_ns, e))
        # Temperature moves slowly (tau of seconds): following it on counter ticks is plenty.
        self._update_temperature(gpu, tick_ns, e)

    def _part_time_windows(self, gpu: _Gpu, k: int) -> None:
        """Windows ending at ticks gpu.tick+1 .. k, as a part-time sensor reports them."""
        f, period = self.params.coverage_fraction, self._period_ns
        for j in range(max(gpu.tick + 1, 1), k + 1):
            w0 = self.start_ns + (j - 1) * period
            seen = gpu.trace.integral_j(w0, w0 + round(f * period)) / f
            gpu.seen_j += seen
            gpu.window_w = seen / (period / 1e9)

    @staticmethod
    def _energy_at(gpu: _Gpu, t_ns: int) -> float:
        """Trace energy at t, from the recent tick energies when t is one of them (it usually
        is: the averaging window spans whole counter periods)."""
        for tick_ns, e in gpu.tick_energy:
            if tick_ns == t_ns:
                return e
        return gpu.trace.energy_j(t_ns)

    def _update_temperature(self, gpu: _Gpu, now_ns: int, energy_j: float) -> None:
        dt_s = (now_ns - gpu.temp_ns) / 1e9
        if dt_s <= 0:
            return
        p = self.params
        steady_c = p.ambient_c + p.thermal_c_per_w * (energy_j - gpu.temp_e_j) / dt_s
        gpu.temp_c += (steady_c - gpu.temp_c) * (1.0 - math.exp(-dt_s / p.thermal_tau_s))
        gpu.temp_ns, gpu.temp_e_j = now_ns, energy_j
