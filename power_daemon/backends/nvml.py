"""GPUs through NVML (nvidia-ml-py). The only module that touches pynvml.

Errors are handled per GPU and per field:
- a field is unsupported when the start-up probe says so (NOT_SUPPORTED, or FUNCTION_NOT_FOUND
  from an older driver, on every one of a few tries), or after GIVE_UP_AFTER consecutive failures;
- GPU_IS_LOST / GPU_NOT_FOUND: that GPU is reported LOST from then on, the others keep being read;
- anything else, NOT_SUPPORTED included: that one reading lacks the field and the next one asks
  again (drivers polled fast return NOT_SUPPORTED now and then; one such error used to switch the
  energy counter off for the daemon's life).

Power: instant power is the field NVML_FI_DEV_POWER_INSTANT asked for in GPU scope; where the
driver refuses GPU scope (Grace Hopper) it is read in MODULE scope, which covers the whole module
(CPU and memory too, while the energy counter is the GPU's), and DeviceInfo.power_scope says
"module". When instant power is absent, fails, or reads 0 W while the average says the GPU draws
power, power_w is the driver's average (nvmlDeviceGetPowerUsage) and the reading says so
(power_from_avg).

What nvmlDeviceGetPowerUsage averages depends on the architecture. NVML API reference,
nvmlDeviceGetPowerUsage: "On Ampere (except GA100) or newer GPUs, the API returns power averaged
over 1 sec interval. On GA100 and older architectures, instantaneous power is returned."
(https://docs.nvidia.com/deploy/nvml-api/group__nvmlDeviceQueries.html). So A100/A30 (GA100,
compute capability 8.0), V100 and older report a window of 0 s, A10/A40/H100/H200/B200 1 s.

Sampling order and cost: every tick reads the energy counter first, stamped with the midpoint of
the clock read just before and just after it, then instant and average power. Temperature,
clocks, memory and utilisation change slowly and each NVML call holds the driver's lock, so they
are read about once a second (SLOW_PERIOD_NS); readings in between repeat the last values.

MIG: NVML enumerates the physical GPUs ("GPU-..." UUIDs), which is where power and energy are
measured; MIG instances have none of their own. A marker naming a MIG instance is attributed to
its parent GPU (canonical_uuid); the daemon keeps the instance in Marker.device_slice.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynvml

from parawatt_proto.records import MarkerRec
from power_daemon.errors import BackendUnavailable
from power_daemon.model import DeviceKind, DeviceSpec, Sample

log = logging.getLogger(__name__)

GIVE_UP_AFTER = 200  # consecutive failures after which a field is taken as unsupported
PROBE_TRIES = 3  # a field is unsupported at start only when every try says NOT_SUPPORTED
SLOW_PERIOD_NS = 1_000_000_000  # temperature, clocks, memory, utilisation: about 1 Hz
_NEVER = (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
_LOST = (pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_GPU_NOT_FOUND)
_SCOPES = {"gpu": pynvml.NVML_POWER_SCOPE_GPU, "module": pynvml.NVML_POWER_SCOPE_MODULE}
_MAX_ALIASES = 1024  # marker UUIDs looked up for a MIG parent (markers may name anything)
_FIELD_VALUE = {  # NVML value type -> union member of c_nvmlValue_t
    pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
}


class _GpuLost(Exception):
    pass


@dataclass
class _Gpu:
    index: int
    handle: Any
    uuid: str
    lost: bool = False
    scope: str = "gpu"  # power scope of the instant-power field
    unsupported: set[str] = field(default_factory=set)
    failures: dict[str, int] = field(default_factory=dict)  # consecutive, per field
    warned: set[str] = field(default_factory=set)
    slow_ns: int | None = None  # monotonic time of the last slow read
    slow: dict[str, float] = field(default_factory=dict)  # their last values


def _instant_power_mw(handle: Any, scope: str) -> float:
    (value,) = pynvml.nvmlDeviceGetFieldValues(
        handle, [(pynvml.NVML_FI_DEV_POWER_INSTANT, _SCOPES[scope])]
    )
    ret = value.nvmlReturn
    if ret == pynvml.NVML_ERROR_INVALID_ARGUMENT:  # a driver that does not know field or scope
        ret = pynvml.NVML_ERROR_NOT_SUPPORTED
    if ret != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(ret)
    member = _FIELD_VALUE.get(value.valueType)
    if member is None:
        log.warning("NVML instant power has unknown value type %d; not used", value.valueType)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    return float(getattr(value.value, member))


def _energy_j(h: Any) -> float:
    return pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0


def _power_avg_w(h: Any) -> float:
    return pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0


# Read about once a second: name -> reader returning the value in proto units.
_SLOW: dict[str, Callable[[Any], Any]] = {
    "util": lambda h: pynvml.nvmlDeviceGetUtilizationRates(h),
    "memory_used_bytes": lambda h: float(pynvml.nvmlDeviceGetMemoryInfo(h).used),
    "temperature_c": lambda h: float(
        pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
    ),
    "sm_clock_mhz": lambda h: float(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
    "mem_clock_mhz": lambda h: float(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)),
}


def power_avg_window_s(
    arch: int | None, compute_capability: tuple[int, int] | None
) -> float | None:
    """Seconds nvmlDeviceGetPowerUsage averages over (0: instantaneous), None when unknown."""
    if arch is None:
        return None
    if arch < pynvml.NVML_DEVICE_ARCH_AMPERE:
        return 0.0  # Volta, Turing and older: instantaneous
    if arch == pynvml.NVML_DEVICE_ARCH_AMPERE:
        if compute_capability is None:
            return None  # GA100 (8.0, instantaneous) or GA10x (8.6/8.7, 1 s): cannot tell
        return 0.0 if compute_capability == (8, 0) else 1.0
    return 1.0  # Ada, Hopper, Blackwell and newer


class NvmlBackend:
    name = "nvml"

    def __init__(self) -> None:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise BackendUnavailable(f"NVML is not available ({e})") from None
        self._closed = False
        try:
            self.driver_version = pynvml.nvmlSystemGetDriverVersion()
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as e:
            self.close()
            raise BackendUnavailable(f"NVML is not usable ({e})") from None
        if count == 0:
            self.close()
            raise BackendUnavailable("NVML found no GPU")
        self._gpus: list[_Gpu] = []
        self._specs = [self._describe(i) for i in range(count)]
        self._aliases: dict[str, str] = {g.uuid: g.uuid for g in self._gpus}

    def _describe(self, i: int) -> DeviceSpec:
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
        except pynvml.NVMLError as e:
            log.warning("NVML device %d is unusable: %s", i, e)
            self._gpus.append(_Gpu(i, None, f"GPU-unusable-{i}", lost=True))
            return DeviceSpec(f"GPU-unusable-{i}", f"unusable ({e})", DeviceKind.GPU, i)
        gpu = _Gpu(i, handle, uuid)
        self._gpus.append(gpu)
        name = self._once(gpu, pynvml.nvmlDeviceGetName) or "NVIDIA GPU"
        has_counter = self._probe(gpu, "energy_j", _energy_j)
        self._probe(gpu, "power_avg_w", _power_avg_w)
        has_instant = self._probe_instant(gpu)
        limit_mw = self._once(gpu, pynvml.nvmlDeviceGetEnforcedPowerLimit)
        memory = self._once(gpu, pynvml.nvmlDeviceGetMemoryInfo)
        pci = self._once(gpu, pynvml.nvmlDeviceGetPciInfo)
        arch = self._once(gpu, pynvml.nvmlDeviceGetArchitecture)
        cc = self._once(gpu, pynvml.nvmlDeviceGetCudaComputeCapability)
        mig = self._once(gpu, pynvml.nvmlDeviceGetMigMode)
        if mig is not None and mig[0] == pynvml.NVML_DEVICE_MIG_ENABLE:
            log.info("GPU %d (%s) is in MIG mode: readings cover all its instances", i, uuid)
        return DeviceSpec(
            uuid=uuid,
            name=name,
            kind=DeviceKind.GPU,
            vendor_index=i,
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
            memory_total_bytes=float(memory.total) if memory is not None else None,
            has_energy_counter=has_counter,
            has_instant_power=has_instant,
            # NVML's counter advances about every 100 ms in 1 mJ units.
            energy_counter_update_s=0.1 if has_counter else None,
            energy_counter_resolution_j=0.001 if has_counter else None,
            power_avg_window_s=power_avg_window_s(arch, tuple(cc) if cc else None),
            pci_bus_id=_text(pci.busId) if pci is not None else "",
            power_scope=gpu.scope,
        )

    def _once(self, gpu: _Gpu, fn: Callable[[Any], Any]) -> Any:
        """A start-up fact (name, limit, ...): None when NVML cannot tell."""
        try:
            return fn(gpu.handle)
        except pynvml.NVMLError as e:
            if e.value not in _NEVER:
                log.warning("GPU %d (%s): %s failed: %s", gpu.index, gpu.uuid, fn.__name__, e)
            return None

    def _probe(self, gpu: _Gpu, key: str, fn: Callable[[Any], Any]) -> bool:
        """Whether the field is there; only NOT_SUPPORTED on every try says it is not."""
        for _ in range(PROBE_TRIES):
            try:
                fn(gpu.handle)
                return True
            except pynvml.NVMLError as e:
                if e.value not in _NEVER:
                    return True  # some other error: the readings will try again
        gpu.unsupported.add(key)
        return False

    def _probe_instant(self, gpu: _Gpu) -> bool:
        for scope in ("gpu", "module"):
            gpu.scope = scope
            gpu.unsupported.discard("power_w")
            if self._probe(gpu, "power_w", lambda h, s=scope: _instant_power_mw(h, s)):
                if scope == "module":
                    log.warning(
                        "GPU %d (%s) refuses GPU-scope instant power: reading module scope "
                        "(the whole module's power; energy stays the GPU's counter)",
                        gpu.index, gpu.uuid,
                    )  # fmt: skip
                return True
        gpu.scope = "gpu"  # power_w is then the GPU's average
        return False

    def devices(self) -> list[DeviceSpec]:
        return list(self._specs)

    def read(self, now_ns: int) -> list[Sample]:
        return [self._read_gpu(gpu) for gpu in self._gpus]

    def _read_gpu(self, gpu: _Gpu) -> Sample:
        if gpu.lost:
            return Sample(device=gpu.index, time_ns=time.time_ns(), lost=True)
        try:
            # Each device gets its own timestamp, taken right around its energy counter.
            before = time.time_ns()
            energy = self._call(gpu, "energy_j", _energy_j)
            sample = Sample(device=gpu.index, time_ns=(before + time.time_ns()) // 2)
            sample.energy_j = energy
            instant = self._call(gpu, "power_w", lambda h: _instant_power_mw(h, gpu.scope))
            sample.power_avg_w = self._call(gpu, "power_avg_w", _power_avg_w)
            sample.power_w = self._checked_instant(gpu, instant, sample.power_avg_w)
            self._slow_fields(gpu, sample)
        except _GpuLost:
            return Sample(device=gpu.index, time_ns=time.time_ns(), lost=True)
        if sample.power_w is None and sample.power_avg_w is not None:
            sample.power_w, sample.power_from_avg = sample.power_avg_w, True
        return sample

    def _checked_instant(self, gpu: _Gpu, mw: float | None, avg_w: float | None) -> float | None:
        """Instant power in W, or None when it failed or reads 0 W on a GPU drawing power."""
        if mw is None:
            return None
        if mw <= 0 and ((avg_w or 0) > 0 or gpu.slow.get("gpu_util_pct", 0) > 0):
            self._failed(gpu, "power_w", "instant power read 0 W while the GPU draws power")
            return None
        return mw / 1000.0

    def _slow_fields(self, gpu: _Gpu, sample: Sample) -> None:
        now = time.monotonic_ns()
        if gpu.slow_ns is None or now - gpu.slow_ns >= SLOW_PERIOD_NS:
            gpu.slow_ns = now
            fresh: dict[str, float] = {}
            for key, reader in _SLOW.items():
                value = self._call(gpu, key, reader)
                if value is None:
                    continue
                if key == "util":
                    fresh["gpu_util_pct"], fresh["mem_util_pct"] = value.gpu, value.memory
                else:
                    fresh[key] = value
            gpu.slow = {k: float(v) for k, v in fresh.items()}
        for key, value in gpu.slow.items():
            setattr(sample, key, value)

    def _call(self, gpu: _Gpu, key: str, fn: Callable[[Any], Any]) -> Any:
        if key in gpu.unsupported:
            return None
        try:
            value = fn(gpu.handle)
        except pynvml.NVMLError as e:
            if e.value in _LOST:
                if not gpu.lost:
                    log.error("GPU %d (%s) is lost: %s; reporting it LOST", gpu.index, gpu.uuid, e)
                gpu.lost = True
                raise _GpuLost from None
            self._failed(gpu, key, str(e))
            return None
        gpu.failures[key] = 0
        return value

    def _failed(self, gpu: _Gpu, key: str, why: str) -> None:
        n = gpu.failures[key] = gpu.failures.get(key, 0) + 1
        if n >= GIVE_UP_AFTER:
            gpu.unsupported.add(key)
            log.warning(
                "GPU %d (%s): %s failed %d times in a row (%s); no longer read",
                gpu.index, gpu.uuid, key, n, why,
            )  # fmt: skip
        elif key not in gpu.warned:
            gpu.warned.add(key)
            log.warning(
                "GPU %d (%s): reading %s failed: %s; retried at the next reading "
                "(logged once)", gpu.index, gpu.uuid, key, why,
            )  # fmt: skip

    def canonical_uuid(self, uuid: str) -> str:
        """The GPU whose readings cover `uuid`: a MIG instance's parent, else `uuid` itself."""
        known = self._aliases.get(uuid)
        if known is not None:
            return known
        if len(self._aliases) >= _MAX_ALIASES + len(self._gpus):
            self._aliases = {g.uuid: g.uuid for g in self._gpus}
        self._aliases[uuid] = self._mig_parent(uuid) or uuid
        return self._aliases[uuid]

    @staticmethod
    def _mig_parent(uuid: str) -> str | None:
        # CUDA gives a MIG instance's UUID without a prefix, and callers may have put "GPU-" on it.
        body = uuid.split("-", 1)[1] if uuid.startswith(("GPU-", "MIG-")) else uuid
        for candidate in dict.fromkeys((uuid, f"MIG-{body}")):
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(candidate)
                if pynvml.nvmlDeviceIsMigDeviceHandle(handle):
                    parent = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
                    return pynvml.nvmlDeviceGetUUID(parent)
            except pynvml.NVMLError:
                continue
        return None

    def on_marker(self, marker: MarkerRec, now_ns: int) -> None:
        pass

    def close(self) -> None:
        """nvmlShutdown once: NVML counts inits, and a second one would end another user's."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
