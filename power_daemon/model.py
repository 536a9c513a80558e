"""Plain data types shared by the daemon's core, backends and adapters (no proto types here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from parawatt_proto.fields import READING_FIELDS


class DeviceKind(IntEnum):
    # Values mirror parawatt.v1.DeviceKind so the proto adapter can pass them through.
    GPU = 1
    CPU_PACKAGE = 2
    DRAM = 3


class MarkerKind(IntEnum):
    # Values mirror parawatt.v1.MarkerKind.
    RUN_START = 1
    RUN_END = 2
    EPOCH_START = 3
    EPOCH_END = 4
    STEP_START = 5
    STEP_END = 6


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


# Optional numeric fields of a reading, in proto field order (the contract's list).
SAMPLE_FIELDS = READING_FIELDS


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


@dataclass(frozen=True, slots=True)
class MarkerData:
    """The fields of a marker the daemon validates and acts on (the config record rides along
    untouched in the adapter)."""

    run_id: str
    rank: int
    kind: int
    epoch: int
    step: int
    time_ns: int
    device_uuid: str = ""
    local_rank: int = 0
    hostname: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    device_slice: str = ""  # the MIG instance the rank trains on (device_uuid: its parent GPU)
    token_sha256: bytes = b""  # SHA-256 of the marker's run token (empty: sent without one)
