"""GPUs through NVML (nvidia-ml-py). The only module that touches pynvml.

Errors are handled per GPU and per function:
- NOT_SUPPORTED, or FUNCTION_NOT_FOUND from an older driver: the field is absent and not asked
  for again;
- GPU_IS_LOST / GPU_NOT_FOUND: that GPU is reported LOST from then on, the others keep being read;
- anything else: the field is absent from that one reading (logged once per GPU and field).

Power: instant power is the field NVML_FI_DEV_POWER_INSTANT asked for in GPU scope (scope MODULE
is the whole module, on Grace Hopper/Blackwell superchips CPU and memory too, while the energy
counter is the GPU's). A GPU that never gave instant power reports its ~1 s average
(nvmlDeviceGetPowerUsage) as power_w; one that did and fails a single read leaves power_w absent
rather than mix an average into a series of instant values.

MIG: NVML enumerates the physical GPUs ("GPU-..." UUIDs), which is where power and energy are
measured; MIG instances have none of their own. A marker naming a MIG instance is attributed to
its parent GPU (canonical_uuid).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynvml

from power_daemon.errors import BackendUnavailable
from power_daemon.model import DeviceKind, DeviceSpec, MarkerData, Sample

log = logging.getLogger(__name__)

_NEVER = (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
_LOST = (pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_GPU_NOT_FOUND)
_INSTANT_POWER = (pynvml.NVML_FI_DEV_POWER_INSTANT, pynvml.NVML_POWER_SCOPE_GPU)
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
    has_instant: bool = False  # it gave instant power at least once
    unsupported: set[str] = field(default_factory=set)
    warned: set[str] = field(default_factory=set)


def _instant_power_mw(handle: Any) -> float:
    (value,) = pynvml.nvmlDeviceGetFieldValues(handle, [_INSTANT_POWER])
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


# name -> (reader returning the value in proto units); order = proto field order.
_READERS: dict[str, Callable[[Any], float]] = {
    "power_w": lambda h: _instant_power_mw(h) / 1000.0,
    "power_avg_w": lambda h: pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
    "energy_j": lambda h: pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0,
    "util": lambda h: pynvml.nvmlDeviceGetUtilizationRates(h),
    "memory_used_bytes": lambda h: float(pynvml.nvmlDeviceGetMemoryInfo(h).used),
    "temperature_c": lambda h: float(
        pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
    ),
    "sm_clock_mhz": lambda h: float(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
    "mem_clock_mhz": lambda h: float(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)),
}


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
        name = self._call(gpu, "name", pynvml.nvmlDeviceGetName) or "NVIDIA GPU"
        has_counter = self._call(gpu, "energy_j", _READERS["energy_j"]) is not None
        gpu.has_instant = self._call(gpu, "power_w", _READERS["power_w"]) is not None
        limit_mw = self._call(gpu, "limit", pynvml.nvmlDeviceGetEnforcedPowerLimit)
        memory = self._call(gpu, "memory_total", pynvml.nvmlDeviceGetMemoryInfo)
        pci = self._call(gpu, "pci", pynvml.nvmlDeviceGetPciInfo)
        mig = self._call(gpu, "mig", pynvml.nvmlDeviceGetMigMode)
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
            has_instant_power=gpu.has_instant,
            # NVML's counter advances about every 100 ms in 1 mJ units; the average power of
            # A100/H100-class GPUs spans about 1 s.
            energy_counter_update_s=0.1 if has_counter else None,
            energy_counter_resolution_j=0.001 if has_counter else None,
            power_avg_window_s=1.0,
            pci_bus_id=_text(pci.busId) if pci is not None else "",
        )

    def devices(self) -> list[DeviceSpec]:
        return list(self._specs)

    def read(self, now_ns: int) -> list[Sample]:
        return [self._read_gpu(gpu) for gpu in self._gpus]

    def _read_gpu(self, gpu: _Gpu) -> Sample:
        # Each device gets its own timestamp: reading 8 GPUs takes a while.
        sample = Sample(device=gpu.index, time_ns=time.time_ns())
        if gpu.lost:
            sample.lost = True
            return sample
        try:
            for key, reader in _READERS.items():
                value = self._call(gpu, key, reader, lost_raises=True)
                if key == "util":
                    if value is not None:
                        sample.gpu_util_pct = float(value.gpu)
                        sample.mem_util_pct = float(value.memory)
                elif value is not None:
                    setattr(sample, key, value)
        except _GpuLost:
            return Sample(device=gpu.index, time_ns=sample.time_ns, lost=True)
        if sample.power_w is not None:
            gpu.has_instant = True
        elif not gpu.has_instant:
            sample.power_w = sample.power_avg_w  # the proto's contract when no instant power
        return sample

    def _call(self, gpu: _Gpu, key: str, fn: Callable[[Any], Any], lost_raises=False) -> Any:
        if key in gpu.unsupported:
            return None
        try:
            return fn(gpu.handle)
        except pynvml.NVMLError as e:
            if e.value in _NEVER:
                gpu.unsupported.add(key)
            elif e.value in _LOST:
                if not gpu.lost:
                    log.error("GPU %d (%s) is lost: %s; reporting it LOST", gpu.index, gpu.uuid, e)
                gpu.lost = True
                if lost_raises:
                    raise _GpuLost from None
            elif key not in gpu.warned:
                gpu.warned.add(key)
                log.warning("GPU %d (%s): reading %s failed: %s", gpu.index, gpu.uuid, key, e)
            return None

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

    def on_marker(self, marker: MarkerData, now_ns: int) -> None:
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
