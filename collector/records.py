"""The collector's own plain records (no proto, no ORM types): a stream message as received, and
what the join computes and the store writes.

The records of the contract's messages (DeviceRec, NodeRec, ReadingRec, MarkerRec, RunConfigRec)
and their one mapping from the wire live in the contract package (parawatt_proto.records,
parawatt_proto.convert), shared with the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parawatt_proto.block import ReadingBlock, as_block
from parawatt_proto.records import MarkerRec, NodeRec, ReadingRec

START_OF = {"run_end": "run_start", "epoch_end": "epoch_start", "step_end": "step_start"}


def shares_device(counted, rank: int, start_ns: int, end_ns: int) -> bool:
    """Whether an interval of `rank` on a device overlaps in time one of another rank's on it
    (`counted`: their (rank, start_ns, end_ns)): ranks that share a GPU (MIG slices, local
    ranks alike by mistake) each measure all of it, and a run, epoch or step counts it once.
    One device under two ranks at different times (a run resumed on other GPUs) is no share."""
    return any(r != rank and s < end_ns and start_ns < e for r, s, e in counted)


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One stream message from one daemon. Its readings may still be encoded (`decode` set,
    `pending` of them): the subscriber threads only receive, and the join thread decodes, so
    one thread does the GIL-bound work however many daemons there are (with a thread each
    decoding, GIL hand-offs cost a third of the collector's CPU at 4 daemons)."""

    address: str
    hostname: str
    boot_id: str
    first_seq: int
    next_seq: int
    readings: list[ReadingRec]
    markers: list[MarkerRec]
    missed: int = 0
    boot_changed: bool = False
    previous_boot: str | None = None
    node: NodeRec | None = None  # first message of every stream
    received_ns: int = 0
    decode: Callable[[], ReadingBlock] | None = None  # the readings, still encoded
    pending: int = 0  # how many readings `decode` returns at most

    def take_readings(self) -> ReadingBlock:
        return self.decode() if self.decode is not None else as_block(self.readings)

    @property
    def weight(self) -> int:
        """Items held, for the queue's bound."""
        return len(self.readings) + self.pending + len(self.markers) + 1


@dataclass(frozen=True, slots=True)
class IntervalRec:
    """One computed interval, ready to store."""

    run_id: str
    rank: int
    device_uuid: str
    kind: str  # step | epoch | run
    epoch: int
    step: int
    start_ns: int
    end_ns: int
    energy_j: float | None
    active_energy_j: float | None
    source: str
    power_integral_j: float | None
    uncertainty_j: float | None
    avg_power_w: float | None
    max_power_w: float | None
    coverage: float
    flags: frozenset[str] = frozenset()
    uncertainty_bound_j: float | None = None  # near-worst-case bound (uncertainty_j: 95 %)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass(frozen=True, slots=True)
class RankUpdate:
    """Facts about a rank's run the join measures: start temperature, idle power used."""

    run_id: str
    rank: int
    start_temperature_c: float | None = None
    idle_power_w: float | None = None
    start_ns: int | None = None  # the session (RUN_START time) these facts were measured for


@dataclass(frozen=True, slots=True)
class IdleBucket:
    """A stretch of idle seconds of one device (collector.join.idle), as persisted."""

    start_ns: int
    seconds: int
    low_w: float  # low percentile of its 1 s averages
    median_w: float


@dataclass(frozen=True, slots=True)
class IdleUpdate:
    device_uuid: str
    idle_power_w: float | None  # None: no trustworthy idle yet (only new buckets to store)
    measured_ns: int | None
    buckets: tuple[IdleBucket, ...] = ()


@dataclass(frozen=True, slots=True)
class SecondAggregate:
    device_uuid: str
    second: int
    samples: int
    avg_power_w: float | None
    max_power_w: float | None
    energy_first_j: float | None
    energy_last_j: float | None
    avg_gpu_util_pct: float | None
    max_temperature_c: float | None
    avg_sm_clock_mhz: float | None
    max_memory_used_bytes: float | None


def as_dict(rec: Any) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in rec.__slots__}
