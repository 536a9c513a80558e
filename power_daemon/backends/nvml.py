"""GPUs through NVML (nvidia-ml-py). The only module that touches pynvml.

A function a GPU does not support (NVML_ERROR_NOT_SUPPORTED) makes that field absent and is not
asked again. A GPU that falls off the bus (NVML_ERROR_GPU_IS_LOST) is reported LOST from then on
while the others keep being read. Other errors make the field absent for that one reading.
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

_LOST = (pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_GPU_NOT_FOUND)
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
    unsupported: set[str] = field(default_factory=set)
    warned: set[str] = field(default_factory=set)


def _instant_power_mw(handle: Any) -> float:
    value = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]
    if value.nvmlReturn != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(value.nvmlReturn)
    return float(getattr(value.value, _FIELD_VALUE.get(value.valueType, "uiVal")))


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
        try:
            self.driver_version = pynvml.nvmlSystemGetDriverVersion()
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as e:
            self._shutdown()
            raise BackendUnavailable(f"NVML is not usable ({e})") from None
        if count == 0:
            self._shutdown()
            raise BackendUnavailable("NVML found no GPU")
        self._gpus: list[_Gpu] = []
        self._specs = [self._describe(i) for i in range(count)]

    def _describe(self, i: int) -> DeviceSpec:
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            gpu = _Gpu(i, handle, uuid)
            self._gpus.append(gpu)
            name = pynvml.nvmlDeviceGetName(handle)
        except pynvml.NVMLError as e:
            log.warning("NVML device %d is unusable: %s", i, e)
            self._gpus.append(_Gpu(i, None, f"GPU-unusable-{i}", lost=True))
            return DeviceSpec(f"GPU-unusable-{i}", f"unusable ({e})", DeviceKind.GPU, i)
        has_counter = self._probe(gpu, "energy_j") is not None
        has_instant = self._probe(gpu, "power_w") is not None
        limit_mw = self._call(gpu, "limit", pynvml.nvmlDeviceGetEnforcedPowerLimit)
        memory = self._call(gpu, "memory_total", pynvml.nvmlDeviceGetMemoryInfo)
        pci = self._call(gpu, "pci", pynvml.nvmlDeviceGetPciInfo)
        return DeviceSpec(
            uuid=uuid,
            name=name,
            kind=DeviceKind.GPU,
            vendor_index=i,
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
            memory_total_bytes=float(memory.total) if memory is not None else None,
            has_energy_counter=has_counter,
            has_instant_power=has_instant,
            # NVML's counter advances about every 100 ms in 1 mJ units; the average power of
            # A100/H100-class GPUs spans about 1 s.
            energy_counter_update_s=0.1 if has_counter else None,
            energy_counter_resolution_j=0.001 if has_counter else None,
            power_avg_window_s=1.0,
            pci_bus_id=_text(pci.busId) if pci is not None else "",
        )

    def _probe(self, gpu: _Gpu, key: str) -> float | None:
        return self._call(gpu, key, _READERS[key])

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
        if sample.power_w is None:
            sample.power_w = sample.power_avg_w  # the proto's contract when no instant power
        return sample

    def _call(self, gpu: _Gpu, key: str, fn: Callable[[Any], Any], lost_raises=False) -> Any:
        if key in gpu.unsupported:
            return None
        try:
            return fn(gpu.handle)
        except pynvml.NVMLError as e:
            if e.value == pynvml.NVML_ERROR_NOT_SUPPORTED:
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

    def on_marker(self, marker: MarkerData, now_ns: int) -> None:
        pass

    def close(self) -> None:
        self._shutdown()

    @staticmethod
    def _shutdown() -> None:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
