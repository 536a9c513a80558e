"""The daemon's own plain types, as its backends produce them (no proto types here).

They are the sender's side of the contract: a Sample has no seq yet (the ring buffer gives it)
and names its device by index, not uuid; a DeviceSpec's index is its place in the device list.
Their fields carry the contract's names, and parawatt_proto.convert encodes them (reading_pb,
device_pb). A marker taken in is the contract's own record (parawatt_proto.records.MarkerRec).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class DeviceKind(IntEnum):
    # Values mirror parawatt.v1.DeviceKind so the proto adapter can pass them through.
    GPU = 1
    CPU_PACKAGE = 2
    DRAM = 3


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    uuid: str
    name: str
    kind: DeviceKind
    vendor_index: int
    power_limit_w: float | None = None
    memory_total_bytes: float | None = None
    has_energy_counter: bool = False
    has_instant_power: bool = False
    energy_counter_update_s: float | None = None
    energy_counter_resolution_j: float | None = None
    power_avg_window_s: float | None = None
    pci_bus_id: str = ""
    power_scope: str = ""  # where power_w is measured: "gpu", "module" (Grace Hopper), "" n/a
    # Sensor facts (power_daemon.calibrate): observes only part of each window (Yang et al.),
    # how the numbers above were obtained, and how far instant power lags the counter.
    partial_coverage: bool = False
    sensor_method: str = ""
    instant_power_lag_s: float | None = None


@dataclass(slots=True)
class Sample:
    """One reading of one device; `device` is its position in the backend's device list."""

    device: int
    time_ns: int
    lost: bool = False
    power_w: float | None = None
    power_avg_w: float | None = None
    energy_j: float | None = None
    gpu_util_pct: float | None = None
    mem_util_pct: float | None = None
    memory_used_bytes: float | None = None
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    power_from_avg: bool = False  # power_w is the driver's average: instant power failed / absent
