"""The one mapping between the contract's messages and plain records (parawatt_proto/records.py).

Encode (the daemon's side): reading_pb, reading_columns_pb, device_pb, stored_marker; NodeInfo
alone is assembled from the daemon's live state (power_daemon/serve/codec.py node_info). Decode
(the collector, the daemon's marker intake, its probe, the trainer): device_rec, node_rec, readings,
reading_block (ReadingColumns, the collector's hot path), marker_rec, run_config. Each message's fields are listed once per direction; tests/test_contract_fields.py
fails when a field of the .proto is neither mapped nor named there as left out on purpose.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from parawatt_proto import limits as L
from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.block import ReadingBlock
from parawatt_proto.fields import (
    DEVICE_KIND_NAMES,
    MARKER_KIND_NAMES,
    READING_FIELDS,
    RUN_STATUS_NAMES,
)
from parawatt_proto.ownership import token_sha256
from parawatt_proto.records import DeviceRec, MarkerRec, NodeRec, ReadingRec, RunConfigRec

_LOST = pb.DEVICE_STATUS_LOST


def _opt(msg, name: str):
    return getattr(msg, name) if msg.HasField(name) else None


# What a device's measured sensor facts can be (DeviceInfo). A value outside its range (NaN,
# infinite, negative: a failing sensor, a calibration gone wrong, a hostile daemon) decodes as
# not measured, and the reader falls back to its default: a NaN counter period raised in the
# collector's energy model, a negative one gave 22 % wrong energy and a negative uncertainty.
_FACT_RANGES = {
    "power_limit_w": (0.0, 1e5),
    "memory_total_bytes": (0.0, 2.0**60),
    "energy_counter_update_s": (1e-4, 60.0),
    "energy_counter_resolution_j": (1e-9, 1e6),
    "power_avg_window_s": (0.0, 3600.0),
    "instant_power_lag_s": (0.0, 10.0),
}


def _fact(msg, name: str) -> float | None:
    v = _opt(msg, name)
    lo, hi = _FACT_RANGES[name]
    return v if v is not None and lo <= v <= hi else None  # NaN fails both comparisons


# -- encode --------------------------------------------------------------------------------


def reading_pb(seq: int, device: int, r: Any) -> pb.Reading:
    """`r`: the daemon's Sample or a ReadingRec (time_ns, lost, READING_FIELDS, power_from_avg);
    `device`: its index in the node's device table (a ReadingRec knows only the uuid)."""
    values = {name: v for name in READING_FIELDS if (v := getattr(r, name)) is not None}
    return pb.Reading(
        seq=seq,
        device=device,
        time_ns=r.time_ns,
        status=_LOST if r.lost else pb.DEVICE_STATUS_OK,
        power_from_avg=r.power_from_avg,
        **values,
    )


_COLUMNS = ("seq", "device", "time_ns", "status", *READING_FIELDS, "power_from_avg")


def reading_columns_pb(readings: Iterable[pb.Reading]) -> pb.ReadingColumns:
    """Reading messages as one ReadingColumns (an unset value: NaN). The daemon builds it per
    stream message from its stored readings: a few us a reading, on the node, where a node's
    few thousand readings a second cost nothing and the collector that reads hundreds of nodes
    then decodes in C."""
    cols: dict[str, list] = {name: [] for name in _COLUMNS}
    fixed = [(cols[name].append, name) for name in ("seq", "device", "time_ns", "status")]
    floats = [(cols[name].append, name) for name in READING_FIELDS]
    from_avg = cols["power_from_avg"].append
    nan = math.nan
    for r in readings:
        for append, name in fixed:
            append(getattr(r, name))
        has = r.HasField
        for append, name in floats:
            append(getattr(r, name) or (0.0 if has(name) else nan))
        from_avg(r.power_from_avg)
    return pb.ReadingColumns(**cols)


def device_pb(index: int, d: Any) -> pb.DeviceInfo:
    """`d`: the daemon's DeviceSpec, which names its fields as DeviceInfo does (kind: an int)."""
    return pb.DeviceInfo(
        index=index,
        uuid=d.uuid,
        name=d.name,
        kind=int(d.kind),
        vendor_index=d.vendor_index,
        power_limit_w=d.power_limit_w,
        memory_total_bytes=d.memory_total_bytes,
        has_energy_counter=d.has_energy_counter,
        has_instant_power=d.has_instant_power,
        energy_counter_update_s=d.energy_counter_update_s,
        energy_counter_resolution_j=d.energy_counter_resolution_j,
        power_avg_window_s=d.power_avg_window_s,
        pci_bus_id=d.pci_bus_id,
        power_scope=d.power_scope,
        partial_coverage=d.partial_coverage,
        sensor_method=d.sensor_method,
        instant_power_lag_s=d.instant_power_lag_s,
    )  # an optional field given None stays unset: "not reported"


def stored_marker(m: pb.Marker, seq: int, resolved: MarkerRec) -> pb.Marker:
    """The marker a rank sent, as the daemon buffers and streams it: its seq, what intake filled
    in (markers.resolve), and the token's hash instead of the token, which never leaves the node."""
    out = pb.Marker()
    out.CopyFrom(m)
    out.seq = seq
    out.hostname = resolved.hostname
    out.device_uuid = resolved.device_uuid
    out.device_slice = resolved.device_slice
    out.run_token = b""
    out.run_token_sha256 = resolved.token_sha256
    return out


# -- decode --------------------------------------------------------------------------------


def device_rec(d: pb.DeviceInfo) -> DeviceRec:
    """A daemon's device (its strings made storable: limits.clean_key / clean_text)."""
    return DeviceRec(
        index=d.index,
        uuid=L.clean_key(d.uuid, L.DEVICE_UUID_MAX),
        name=L.clean_text(d.name, L.DEVICE_NAME_MAX),
        kind=DEVICE_KIND_NAMES.get(d.kind, "gpu"),
        vendor_index=d.vendor_index,
        power_limit_w=_fact(d, "power_limit_w"),
        memory_total_bytes=_fact(d, "memory_total_bytes"),
        has_energy_counter=d.has_energy_counter,
        has_instant_power=d.has_instant_power,
        counter_update_s=_fact(d, "energy_counter_update_s"),
        counter_resolution_j=_fact(d, "energy_counter_resolution_j"),
        power_avg_window_s=_fact(d, "power_avg_window_s"),
        partial_coverage=d.partial_coverage,
        sensor_method=L.clean_text(d.sensor_method, L.SENSOR_METHOD_MAX),
        instant_power_lag_s=_fact(d, "instant_power_lag_s"),
    )


def boot_id_problem(boot_id: str) -> str | None:
    """Why a stream's boot id cannot be stored (None when it can)."""
    reason = L.text_problem(boot_id, L.BOOT_ID_MAX)
    return f"boot_id {reason}" if reason else None


def node_rec(info: pb.NodeInfo) -> NodeRec:
    """The node and its device table; the buffer's bounds and clock are per answer, read there.
    Its strings are made storable (limits.clean_key / clean_text), but for the boot id, which
    the daemon is asked to resume from as it sent it: the collector refuses a stream whose boot
    id is not acceptable (boot_id_problem)."""
    return NodeRec(
        hostname=L.clean_key(info.hostname, L.HOSTNAME_MAX),
        boot_id=info.boot_id,
        backend=L.clean_text(info.backend, L.VERSION_MAX),
        driver_version=L.clean_text(info.driver_version, L.VERSION_MAX),
        daemon_version=L.clean_text(info.daemon_version, L.VERSION_MAX),
        interval_ns=info.interval_ns,
        started_ns=info.started_ns,
        devices=tuple(device_rec(d) for d in info.devices),
    )


def readings(
    batch: pb.StreamBatch | pb.LatestReadings, uuids: Mapping[int, str]
) -> list[ReadingRec]:
    """Hot path (50,000+ readings/s, under 2 us each): written out field by field, since a
    generic loop (over ListFields()) measured 3x slower; tests/test_contract_fields.py checks
    the order against READING_FIELDS. Presence is asked only of a zero (an unset optional
    reads 0.0; a non-zero value is set): 9 HasField calls a reading were a third of the cost.
    A reading of a device not in `uuids` (index -> uuid) cannot be attributed: skipped."""
    out = []
    append = out.append
    rec = ReadingRec
    for r in batch.readings:
        try:
            uuid = uuids[r.device]  # a subscript, not .get(): a method call costs 2 %
        except KeyError:
            continue
        has = r.HasField
        append(
            rec(
                r.seq,
                uuid,
                r.time_ns,
                r.status == _LOST,
                r.power_w or (0.0 if has("power_w") else None),
                r.power_avg_w or (0.0 if has("power_avg_w") else None),
                r.energy_j or (0.0 if has("energy_j") else None),
                r.gpu_util_pct or (0.0 if has("gpu_util_pct") else None),
                r.mem_util_pct or (0.0 if has("mem_util_pct") else None),
                r.memory_used_bytes or (0.0 if has("memory_used_bytes") else None),
                r.temperature_c or (0.0 if has("temperature_c") else None),
                r.sm_clock_mhz or (0.0 if has("sm_clock_mhz") else None),
                r.mem_clock_mhz or (0.0 if has("mem_clock_mhz") else None),
                r.power_from_avg,
            )
        )
    return out


def column_count(cols: pb.ReadingColumns) -> int:
    """How many readings `cols` holds; ValueError when its arrays differ in length (a malformed
    message: checked where it is received, before anything of it is used)."""
    n = len(cols.seq)
    bad = [f"{name} {len(getattr(cols, name))}" for name in _COLUMNS
           if len(getattr(cols, name)) != n]  # fmt: skip
    if bad:
        raise ValueError(f"malformed ReadingColumns: seq has {n} entries but {', '.join(bad)}")
    return n


def reading_block(cols: pb.ReadingColumns, uuids: Mapping[int, str]) -> ReadingBlock:
    """The collector's hot path: every column converted in C (~0.1 us a reading). Readings of a
    device not in `uuids` (index -> uuid) cannot be attributed: left out. Call column_count()
    first (a malformed message raises there)."""
    n = len(cols.seq)
    device = np.array(cols.device, dtype=np.int64).reshape(n)
    values = np.empty((n, len(READING_FIELDS)))
    for k, name in enumerate(READING_FIELDS):
        values[:, k] = getattr(cols, name)
    present, dev = np.unique(device, return_inverse=True)
    names = [uuids.get(int(i)) for i in present]
    block = ReadingBlock(
        tuple(u or "" for u in names), dev.astype(np.intp, copy=False),
        np.array(cols.seq, dtype=np.int64).reshape(n), np.array(cols.time_ns, np.int64).reshape(n),
        np.array(cols.status, np.int64).reshape(n) == _LOST, values,
        np.array(cols.power_from_avg, bool).reshape(n),
    )  # fmt: skip
    if None in names:
        known = np.array([u is not None for u in names])
        block = block.take(known[dev])
    return block


def marker_rec(m: pb.Marker, *, at_intake: bool = False) -> MarkerRec:
    """`at_intake`: the daemon taking a marker from a rank, which sends its run token (hashed
    here) and has no say over the hash; everywhere else the streamed hash is the one."""
    config = run_config(m.config) if m.kind == pb.RUN_START and m.HasField("config") else None
    return MarkerRec(
        run_id=m.run_id,
        rank=m.rank,
        kind=MARKER_KIND_NAMES.get(m.kind, "unknown"),
        epoch=m.epoch,
        step=m.step,
        time_ns=m.time_ns,
        device_uuid=m.device_uuid,
        local_rank=m.local_rank,
        hostname=m.hostname,
        seq=m.seq,
        metrics=dict(m.metrics),
        status=RUN_STATUS_NAMES.get(m.status) if m.kind == pb.RUN_END else None,
        config=config,
        device_slice=m.device_slice,
        token_sha256=token_sha256(m.run_token) if at_intake else m.run_token_sha256,
    )


def run_config(c: pb.RunConfig) -> RunConfigRec:
    return RunConfigRec(
        world_size=c.world_size,
        nodes=c.nodes,
        local_rank=c.local_rank,
        local_world_size=c.local_world_size,
        device_name=c.device_name,
        device_uuid=c.device_uuid,
        global_batch_size=c.global_batch_size,
        local_batch_size=c.local_batch_size,
        accumulation_steps=c.accumulation_steps,
        model=c.model,
        parameter_count=c.parameter_count,
        dataset=c.dataset,
        dataset_size=c.dataset_size,
        epochs=c.epochs,
        steps_per_epoch=c.steps_per_epoch,
        seed=c.seed,
        torch_version=c.torch_version,
        cuda_version=c.cuda_version,
        driver_version=c.driver_version,
        hostname=c.hostname,
        amp=c.amp,
        recipe=dict(c.recipe),
        tags=dict(c.tags),
        backend=c.backend,
    )
