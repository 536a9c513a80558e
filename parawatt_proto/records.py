"""Plain records of the contract's messages, as a reader of the stream sees them (no proto types).

One record per message: DeviceRec (DeviceInfo), NodeRec (NodeInfo), ReadingRec (Reading),
MarkerRec (Marker), RunConfigRec (RunConfig). parawatt_proto/convert.py is the only mapping
between them and the messages; the collector joins and stores them, the daemon takes a marker
in as a MarkerRec. Standard library only, so the collector's join and store can use them without
importing protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MARKER_KINDS = ("run_start", "run_end", "epoch_start", "epoch_end", "step_start", "step_end")
INTERVAL_KIND = {kind: kind.split("_")[0] for kind in MARKER_KINDS}  # run_start -> run


@dataclass(frozen=True, slots=True)
class DeviceRec:
    index: int  # DeviceInfo.index: Reading.device refers to it
    uuid: str
    name: str
    kind: str  # gpu | cpu | dram
    vendor_index: int = 0
    power_limit_w: float | None = None
    memory_total_bytes: float | None = None
    has_energy_counter: bool = True
    has_instant_power: bool = True
    counter_update_s: float | None = None  # DeviceInfo.energy_counter_update_s
    counter_resolution_j: float | None = None  # DeviceInfo.energy_counter_resolution_j
    power_avg_window_s: float | None = None
    partial_coverage: bool = False  # the sensor observes part of each window (Yang et al.)
    sensor_method: str = ""
    instant_power_lag_s: float | None = None  # how far instant power lags the counter


@dataclass(frozen=True, slots=True)
class NodeRec:
    hostname: str
    boot_id: str
    backend: str = ""
    driver_version: str = ""
    daemon_version: str = ""
    interval_ns: int = 0
    started_ns: int = 0
    devices: tuple[DeviceRec, ...] = ()


@dataclass(slots=True)  # not frozen: 7x cheaper to build, 50,000+ a second; never mutated
class ReadingRec:
    seq: int
    device_uuid: str
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
    power_from_avg: bool = False  # power_w is the driver's ~1 s average, not instant power


@dataclass(frozen=True, slots=True)
class RunConfigRec:
    """RunConfig from RUN_START, with the free-form maps as dicts."""

    world_size: int = 1
    nodes: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device_name: str = ""
    device_uuid: str = ""
    global_batch_size: int = 0
    local_batch_size: int = 0
    accumulation_steps: int = 1
    model: str = ""
    parameter_count: int = 0
    dataset: str = ""
    dataset_size: int = 0
    epochs: int = 0
    steps_per_epoch: int = 0
    seed: int = 0
    torch_version: str = ""
    cuda_version: str = ""
    driver_version: str = ""
    hostname: str = ""
    amp: bool = False
    recipe: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    backend: str = ""


@dataclass(frozen=True, slots=True)
class MarkerRec:
    run_id: str
    rank: int
    kind: str  # one of MARKER_KINDS ("unknown" for a kind this side does not know)
    epoch: int
    step: int
    time_ns: int
    device_uuid: str = ""
    local_rank: int = 0
    hostname: str = ""
    seq: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    status: str | None = None  # run_end: completed | failed | interrupted
    config: RunConfigRec | None = None  # run_start only
    device_slice: str = ""  # MIG instance the rank trained on (device_uuid is its whole GPU)
    token_sha256: bytes = b""  # SHA-256 of the sender's run token (run ownership)

    @property
    def key(self) -> tuple[str, int, str, int, int]:
        """The interval this marker bounds: (run_id, rank, interval kind, epoch, step)."""
        return (self.run_id, self.rank, INTERVAL_KIND[self.kind], self.epoch, self.step)
