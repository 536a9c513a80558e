"""The Protocol every measurement source implements, and a combinator for GPU + RAPL."""

from __future__ import annotations

from typing import Protocol

from parawatt_proto.records import MarkerRec
from power_daemon.model import DeviceSpec, Sample


class Backend(Protocol):
    name: str  # "nvml", "sim", "rapl"; combined as "sim+rapl"
    driver_version: str

    def devices(self) -> list[DeviceSpec]:
        """The devices, in a fixed order; Sample.device is a position in this list."""
        ...

    def read(self, now_ns: int) -> list[Sample]:
        """One sample per device (a lost device gives a sample with lost=True)."""
        ...

    def on_marker(self, marker: MarkerRec, now_ns: int) -> None:
        """A marker the daemon accepted at now_ns (the sim follows them; real hardware ignores)."""
        ...

    def canonical_uuid(self, uuid: str) -> str:
        """The device whose readings cover `uuid` (NVML: a MIG instance's parent GPU)."""
        ...

    def close(self) -> None: ...


class CombinedBackend:
    """Several backends as one: devices concatenated, sample indices shifted to match."""

    def __init__(self, parts: list[Backend]) -> None:
        self.parts = parts
        self.name = "+".join(p.name for p in parts)
        self.driver_version = next((p.driver_version for p in parts if p.driver_version), "")
        self._offsets: list[int] = []
        self._devices: list[DeviceSpec] = []
        for p in parts:
            self._offsets.append(len(self._devices))
            self._devices.extend(p.devices())

    def devices(self) -> list[DeviceSpec]:
        return list(self._devices)

    def read(self, now_ns: int) -> list[Sample]:
        out: list[Sample] = []
        for offset, part in zip(self._offsets, self.parts, strict=True):
            samples = part.read(now_ns)
            if offset:
                for s in samples:
                    s.device += offset
            out.extend(samples)
        return out

    def on_marker(self, marker: MarkerRec, now_ns: int) -> None:
        for p in self.parts:
            p.on_marker(marker, now_ns)

    def canonical_uuid(self, uuid: str) -> str:
        for p in self.parts:
            uuid = p.canonical_uuid(uuid)
        return uuid

    def close(self) -> None:
        for p in self.parts:
            p.close()

    def part(self, name: str) -> Backend | None:
        return next((p for p in self.parts if p.name == name), None)
