"""Protobuf stream messages -> plain records (the gRPC adapter's translation, kept separate)."""

from __future__ import annotations

from collector.records import DeviceRec, MarkerRec, NodeRec, ReadingRec, RunConfigRec
from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.fields import DEVICE_KIND_NAMES, MARKER_KIND_NAMES, RUN_STATUS_NAMES

DEVICE_KIND = DEVICE_KIND_NAMES
MARKER_KIND = MARKER_KIND_NAMES
RUN_STATUS = RUN_STATUS_NAMES
_LOST = pb.DEVICE_STATUS_LOST


def _opt(msg, name: str):
    return getattr(msg, name) if msg.HasField(name) else None


def node_rec(info: pb.NodeInfo) -> NodeRec:
    devices = tuple(
        DeviceRec(
            index=d.index,
            uuid=d.uuid,
            name=d.name,
            kind=DEVICE_KIND.get(d.kind, "gpu"),
            vendor_index=d.vendor_index,
            power_limit_w=_opt(d, "power_limit_w"),
            memory_total_bytes=_opt(d, "memory_total_bytes"),
            has_energy_counter=d.has_energy_counter,
            has_instant_power=d.has_instant_power,
            counter_update_s=_opt(d, "energy_counter_update_s"),
            counter_resolution_j=_opt(d, "energy_counter_resolution_j"),
            power_avg_window_s=_opt(d, "power_avg_window_s"),
            partial_coverage=d.partial_coverage,
            sensor_method=d.sensor_method,
            instant_power_lag_s=_opt(d, "instant_power_lag_s"),
        )
        for d in info.devices
    )
    return NodeRec(
        hostname=info.hostname,
        boot_id=info.boot_id,
        backend=info.backend,
        driver_version=info.driver_version,
        daemon_version=info.daemon_version,
        interval_ns=info.interval_ns,
        started_ns=info.started_ns,
        devices=devices,
    )


def readings(batch: pb.StreamBatch, uuids: dict[int, str]) -> list[ReadingRec]:
    """Hot path (50,000+ readings/s): written out field by field, about 3 us per reading."""
    out = []
    append = out.append
    for r in batch.readings:
        uuid = uuids.get(r.device)
        if uuid is None:
            continue  # not in this boot's device table: cannot be attributed
        has = r.HasField
        append(
            ReadingRec(
                r.seq,
                uuid,
                r.time_ns,
                r.status == _LOST,
                r.power_w if has("power_w") else None,
                r.power_avg_w if has("power_avg_w") else None,
                r.energy_j if has("energy_j") else None,
                r.gpu_util_pct if has("gpu_util_pct") else None,
                r.mem_util_pct if has("mem_util_pct") else None,
                r.memory_used_bytes if has("memory_used_bytes") else None,
                r.temperature_c if has("temperature_c") else None,
                r.sm_clock_mhz if has("sm_clock_mhz") else None,
                r.mem_clock_mhz if has("mem_clock_mhz") else None,
                r.power_from_avg,
            )
        )
    return out


def marker(m: pb.Marker) -> MarkerRec:
    kind = MARKER_KIND.get(m.kind)
    config = run_config(m.config) if m.kind == pb.RUN_START and m.HasField("config") else None
    return MarkerRec(
        run_id=m.run_id,
        rank=m.rank,
        kind=kind or "unknown",
        epoch=m.epoch,
        step=m.step,
        time_ns=m.time_ns,
        device_uuid=m.device_uuid,
        local_rank=m.local_rank,
        hostname=m.hostname,
        seq=m.seq,
        metrics=dict(m.metrics),
        status=RUN_STATUS.get(m.status) if m.kind == pb.RUN_END else None,
        config=config,
        device_slice=m.device_slice,
        token_sha256=m.run_token_sha256,
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
