"""SQLAlchemy 2.0 typed models: the collector's schema (changed only through migrations).

Times are integer ns since the epoch (host wall clock of the node that observed them); energies
in J, power in W. Idempotency lives in the unique keys: a replayed reading is (boot, seq), a
marker (run_id, rank, kind, epoch, step), an interval the same plus the device.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from parawatt_proto import limits as L

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias), not BIGINT.
PkInt = BigInteger().with_variant(Integer, "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {int: BigInteger, dict[str, Any]: Json}


class Node(Base):
    __tablename__ = "node"
    id: Mapped[int] = mapped_column(PkInt, primary_key=True)
    hostname: Mapped[str] = mapped_column(String(L.HOSTNAME_MAX), unique=True)


class Boot(Base):
    """One daemon process lifetime; sequence numbers mean something only within it."""

    __tablename__ = "boot"
    id: Mapped[int] = mapped_column(PkInt, primary_key=True)
    boot_id: Mapped[str] = mapped_column(String(L.BOOT_ID_MAX), unique=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("node.id"), index=True)
    backend: Mapped[str] = mapped_column(String(L.VERSION_MAX))
    driver_version: Mapped[str] = mapped_column(String(L.VERSION_MAX))
    daemon_version: Mapped[str] = mapped_column(String(L.VERSION_MAX))
    interval_ns: Mapped[int]
    started_ns: Mapped[int]


class IngestCursor(Base):
    """Per daemon boot: every item below next_seq is stored (written in the same transaction)."""

    __tablename__ = "ingest_cursor"
    boot_id: Mapped[int] = mapped_column(ForeignKey("boot.id"), primary_key=True)
    address: Mapped[str] = mapped_column(String(255), index=True)
    next_seq: Mapped[int]
    updated_ns: Mapped[int]


class Device(Base):
    __tablename__ = "device"
    id: Mapped[int] = mapped_column(PkInt, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(L.DEVICE_UUID_MAX), unique=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("node.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # gpu | cpu | dram
    name: Mapped[str] = mapped_column(String(L.DEVICE_NAME_MAX))
    vendor_index: Mapped[int]
    power_limit_w: Mapped[float | None] = mapped_column(Float)
    memory_total_bytes: Mapped[float | None] = mapped_column(Float)
    has_energy_counter: Mapped[bool] = mapped_column(Boolean)
    has_instant_power: Mapped[bool] = mapped_column(Boolean)
    power_avg_window_s: Mapped[float | None] = mapped_column(Float)
    counter_update_s: Mapped[float | None] = mapped_column(Float)
    counter_resolution_j: Mapped[float | None] = mapped_column(Float)
    idle_power_w: Mapped[float | None] = mapped_column(Float)  # latest measurement
    idle_measured_ns: Mapped[int | None]
    partial_coverage: Mapped[bool | None] = mapped_column(Boolean)  # sensor sees part of windows
    # how its facts were found
    sensor_method: Mapped[str | None] = mapped_column(String(L.SENSOR_METHOD_MAX))


class IdleBucket(Base):
    """A device's idle history (collector.join.idle): per stretch of idle seconds, a low percentile
    and the median of its 1 s averages. Read back at start-up; trimmed to the history kept."""

    __tablename__ = "idle_bucket"
    device_id: Mapped[int] = mapped_column(
        PkInt, ForeignKey("device.id"), primary_key=True, autoincrement=False
    )
    start_ns: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    seconds: Mapped[int] = mapped_column(Integer)
    low_w: Mapped[float] = mapped_column(Float)
    median_w: Mapped[float] = mapped_column(Float)


class Reading(Base):
    """Raw readings, deleted after the retention window.

    No foreign keys on purpose: this table takes 50,000+ rows/s and a per-row referential
    check costs PostgreSQL about half its insert rate. boot_id and device_id are boot.id and
    device.id; the writer always commits those rows first."""

    __tablename__ = "reading"
    boot_id: Mapped[int] = mapped_column(PkInt, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    device_id: Mapped[int] = mapped_column(PkInt)
    time_ns: Mapped[int] = mapped_column(index=True)
    lost: Mapped[bool] = mapped_column(Boolean)
    power_w: Mapped[float | None] = mapped_column(Float)
    power_avg_w: Mapped[float | None] = mapped_column(Float)
    energy_j: Mapped[float | None] = mapped_column(Float)
    gpu_util_pct: Mapped[float | None] = mapped_column(Float)
    mem_util_pct: Mapped[float | None] = mapped_column(Float)
    memory_used_bytes: Mapped[float | None] = mapped_column(Float)
    temperature_c: Mapped[float | None] = mapped_column(Float)
    sm_clock_mhz: Mapped[float | None] = mapped_column(Float)
    mem_clock_mhz: Mapped[float | None] = mapped_column(Float)


class Reading1s(Base):
    """Per-device, per-second aggregates of the raw readings, kept for good."""

    __tablename__ = "reading_1s"
    device_id: Mapped[int] = mapped_column(
        ForeignKey("device.id"), primary_key=True, autoincrement=False
    )
    second: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)  # unix s
    samples: Mapped[int]
    avg_power_w: Mapped[float | None] = mapped_column(Float)
    max_power_w: Mapped[float | None] = mapped_column(Float)
    energy_first_j: Mapped[float | None] = mapped_column(Float)
    energy_last_j: Mapped[float | None] = mapped_column(Float)
    avg_gpu_util_pct: Mapped[float | None] = mapped_column(Float)
    max_temperature_c: Mapped[float | None] = mapped_column(Float)
    avg_sm_clock_mhz: Mapped[float | None] = mapped_column(Float)
    max_memory_used_bytes: Mapped[float | None] = mapped_column(Float)


class StreamGap(Base):
    """Items a daemon could no longer deliver, a daemon restart, or a write-backlog overflow."""

    __tablename__ = "stream_gap"
    __table_args__ = (UniqueConstraint("boot_id", "kind", "first_seq"),)
    id: Mapped[int] = mapped_column(PkInt, primary_key=True)
    boot_id: Mapped[int] = mapped_column(ForeignKey("boot.id"))
    kind: Mapped[str] = mapped_column(String(16))  # missed | boot_changed | dropped
    address: Mapped[str] = mapped_column(String(255))
    first_seq: Mapped[int]
    items: Mapped[int]
    previous_boot: Mapped[str | None] = mapped_column(String(L.BOOT_ID_MAX))
    detected_ns: Mapped[int]


class Run(Base):
    __tablename__ = "run"
    run_id: Mapped[str] = mapped_column(String(L.RUN_ID_MAX), primary_key=True)
    model: Mapped[str] = mapped_column(String(L.MODEL_MAX))
    dataset: Mapped[str] = mapped_column(String(L.DATASET_MAX))
    world_size: Mapped[int] = mapped_column(Integer)
    nodes: Mapped[int] = mapped_column(Integer)
    global_batch_size: Mapped[int]
    local_batch_size: Mapped[int]
    accumulation_steps: Mapped[int] = mapped_column(Integer)
    parameter_count: Mapped[int]
    dataset_size: Mapped[int]
    epochs_planned: Mapped[int] = mapped_column(Integer)
    steps_per_epoch: Mapped[int]
    seed: Mapped[int]
    amp: Mapped[bool] = mapped_column(Boolean)
    device_name: Mapped[str] = mapped_column(String(L.DEVICE_NAME_MAX))
    recipe: Mapped[dict[str, Any]]
    tags: Mapped[dict[str, Any]]
    software: Mapped[dict[str, Any]]  # torch, cuda, driver, dist backend
    hardware: Mapped[dict[str, Any]]  # device name, hostnames
    status: Mapped[str] = mapped_column(String(16))  # running | completed | failed | interrupted
    start_ns: Mapped[int]
    end_ns: Mapped[int | None]
    metrics: Mapped[dict[str, Any]]  # rank 0's RUN_END metrics
    # SHA-256 of the run token of the first stored RUN_START: the run's owner (see
    # parawatt_proto.ownership). Empty for a run started without a token; NULL: stored before
    # run ownership existed (treated as empty).
    run_token_sha256: Mapped[bytes | None] = mapped_column(LargeBinary(L.RUN_TOKEN_SHA256_BYTES))


class RunRank(Base):
    __tablename__ = "run_rank"
    run_id: Mapped[str] = mapped_column(ForeignKey("run.run_id"), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hostname: Mapped[str] = mapped_column(String(L.HOSTNAME_MAX))
    local_rank: Mapped[int] = mapped_column(Integer)
    device_uuid: Mapped[str] = mapped_column(String(L.DEVICE_UUID_MAX))
    start_ns: Mapped[int]  # of the rank's latest session (a resumed rank starts again)
    end_ns: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(16))
    start_temperature_c: Mapped[float | None] = mapped_column(Float)
    idle_power_w: Mapped[float | None] = mapped_column(Float)  # used for its active energy
    metrics: Mapped[dict[str, Any]]


class Marker(Base):
    __tablename__ = "marker"
    __table_args__ = (UniqueConstraint("run_id", "rank", "kind", "epoch", "step"),)
    id: Mapped[int] = mapped_column(PkInt, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(L.RUN_ID_MAX))
    rank: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # run_start | run_end | epoch_start | ...
    epoch: Mapped[int]
    step: Mapped[int]
    time_ns: Mapped[int]
    hostname: Mapped[str] = mapped_column(String(L.HOSTNAME_MAX))
    device_uuid: Mapped[str] = mapped_column(String(L.DEVICE_UUID_MAX))
    local_rank: Mapped[int] = mapped_column(Integer)
    boot_id: Mapped[int | None] = mapped_column(ForeignKey("boot.id"))
    seq: Mapped[int | None]
    status: Mapped[str | None] = mapped_column(String(16))
    metrics: Mapped[dict[str, Any]]


class Interval(Base):
    """Energy of one step / epoch / run of one rank on one device.

    A rank's GPU gets step, epoch and run intervals; a node's CPU packages and DRAM get epoch and
    run intervals under the node's local-rank-0 rank, so node energy = GPUs + CPU + DRAM.
    A run resumed from a checkpoint has one run interval per rank and device all the same: its
    sessions merged (flag "resumed"), start_ns..end_ns spanning them all and duration_s the
    time they ran, without the time between them (store_intervals).
    """

    __tablename__ = "interval"
    __table_args__ = (
        UniqueConstraint("run_id", "rank", "kind", "epoch", "step", "device_id"),
        Index("ix_interval_run_kind_step", "run_id", "kind", "step"),
    )
    id: Mapped[int] = mapped_column(PkInt, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(L.RUN_ID_MAX))
    rank: Mapped[int] = mapped_column(Integer)
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id"))
    kind: Mapped[str] = mapped_column(String(8))  # step | epoch | run
    epoch: Mapped[int]
    step: Mapped[int]
    start_ns: Mapped[int]
    end_ns: Mapped[int]
    duration_s: Mapped[float] = mapped_column(Float)  # end − start, but see "resumed" above
    energy_j: Mapped[float | None] = mapped_column(Float)
    active_energy_j: Mapped[float | None] = mapped_column(Float)  # above the device's idle power
    source: Mapped[str] = mapped_column(String(16))  # counter | power | none
    power_integral_j: Mapped[float | None] = mapped_column(Float)
    uncertainty_j: Mapped[float | None] = mapped_column(Float)  # 95 % half-width (calibrated)
    uncertainty_bound_j: Mapped[float | None] = mapped_column(Float)  # near-worst-case bound
    avg_power_w: Mapped[float | None] = mapped_column(Float)
    max_power_w: Mapped[float | None] = mapped_column(Float)
    coverage: Mapped[float] = mapped_column(Float)  # fraction of the interval readings span
    flags: Mapped[str] = mapped_column(String(255))  # comma-separated, sorted; "" when clean
