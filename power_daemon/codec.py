"""Translation between the daemon's plain types and the parawatt protobuf messages.

Readings and markers are stored as ready-made StreamBatch fragments: the field tag and length
of the repeated `readings` (4) / `markers` (5) field followed by the message bytes. A batch on
the wire is then a small header message concatenated with fragments (protobuf merges
concatenated messages and keeps repeated fields in order), so streaming costs no per-reading
Python work: the difference between ~40k and several hundred thousand readings per second.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.fields import DEVICE_OPTIONAL_FIELDS
from parawatt_proto.ownership import token_sha256
from power_daemon import __version__
from power_daemon.model import SAMPLE_FIELDS, DeviceKind, DeviceSpec, MarkerData, Sample

if TYPE_CHECKING:
    from power_daemon.daemon import Daemon

_READING_TAG = bytes([(4 << 3) | 2])
_MARKER_TAG = bytes([(5 << 3) | 2])


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def reading_pb(seq: int, s: Sample) -> pb.Reading:
    values = {name: v for name in SAMPLE_FIELDS if (v := getattr(s, name)) is not None}
    status = pb.DEVICE_STATUS_LOST if s.lost else pb.DEVICE_STATUS_OK
    return pb.Reading(
        seq=seq,
        device=s.device,
        time_ns=s.time_ns,
        status=status,
        power_from_avg=s.power_from_avg,
        **values,
    )


def encode_reading(seq: int, s: Sample) -> bytes:
    body = reading_pb(seq, s).SerializeToString()
    return _READING_TAG + _varint(len(body)) + body


def encode_marker(marker: pb.Marker, seq: int, resolved: MarkerData) -> bytes:
    m = pb.Marker()
    m.CopyFrom(marker)
    m.seq = seq
    m.hostname = resolved.hostname
    m.device_uuid = resolved.device_uuid
    m.device_slice = resolved.device_slice
    m.run_token = b""  # the secret never leaves the node: only its hash is buffered/streamed
    m.run_token_sha256 = resolved.token_sha256
    body = m.SerializeToString()
    return _MARKER_TAG + _varint(len(body)) + body


def marker_data(m: pb.Marker) -> MarkerData:
    return MarkerData(
        run_id=m.run_id,
        rank=m.rank,
        kind=m.kind,
        epoch=m.epoch,
        step=m.step,
        time_ns=m.time_ns,
        device_uuid=m.device_uuid,
        local_rank=m.local_rank,
        hostname=m.hostname,
        metrics=dict(m.metrics),
        device_slice=m.device_slice,
        token_sha256=token_sha256(m.run_token),
    )


_OPTIONAL_DEVICE_FIELDS = DEVICE_OPTIONAL_FIELDS


def device_pb(index: int, d: DeviceSpec) -> pb.DeviceInfo:
    optional = {name: v for name in _OPTIONAL_DEVICE_FIELDS if (v := getattr(d, name)) is not None}
    return pb.DeviceInfo(
        index=index,
        uuid=d.uuid,
        name=d.name,
        kind=int(d.kind),
        vendor_index=d.vendor_index,
        has_energy_counter=d.has_energy_counter,
        has_instant_power=d.has_instant_power,
        pci_bus_id=d.pci_bus_id,
        power_scope=d.power_scope,
        partial_coverage=d.partial_coverage,
        sensor_method=d.sensor_method,
        **optional,
    )


def node_info(daemon: Daemon) -> pb.NodeInfo:
    first, nxt = daemon.buffer.bounds()
    return pb.NodeInfo(
        hostname=daemon.hostname,
        boot_id=daemon.boot_id,
        backend=daemon.backend.name,
        driver_version=daemon.backend.driver_version,
        daemon_version=__version__,
        interval_ns=daemon.config.interval_ns,
        first_seq=first,
        next_seq=nxt,
        capacity=daemon.buffer.capacity,
        devices=[device_pb(i, d) for i, d in enumerate(daemon.devices)],
        time_ns=time.time_ns(),
        started_ns=daemon.started_ns,
    )


def batch_bytes(
    boot_id: str,
    first_seq: int,
    payloads: list[bytes],
    *,
    missed: int = 0,
    info: pb.NodeInfo | None = None,
    boot_changed: bool = False,
) -> bytes:
    header = pb.StreamBatch(
        boot_id=boot_id,
        first_seq=first_seq,
        next_seq=first_seq + len(payloads),
        missed=missed,
        info=info,
        boot_changed=boot_changed,
    )
    return header.SerializeToString() + b"".join(payloads)


def device_spec(d: pb.DeviceInfo) -> DeviceSpec:
    """DeviceInfo -> DeviceSpec (for tools that talk to a running daemon)."""
    optional = {
        name: getattr(d, name) if d.HasField(name) else None for name in _OPTIONAL_DEVICE_FIELDS
    }
    return DeviceSpec(
        uuid=d.uuid,
        name=d.name,
        kind=DeviceKind(d.kind) if d.kind else DeviceKind.GPU,
        vendor_index=d.vendor_index,
        has_energy_counter=d.has_energy_counter,
        has_instant_power=d.has_instant_power,
        pci_bus_id=d.pci_bus_id,
        power_scope=d.power_scope,
        partial_coverage=d.partial_coverage,
        sensor_method=d.sensor_method,
        **optional,
    )


def sample(r: pb.Reading) -> Sample:
    """Reading -> Sample."""
    values = {name: getattr(r, name) if r.HasField(name) else None for name in SAMPLE_FIELDS}
    lost = r.status == pb.DEVICE_STATUS_LOST
    return Sample(device=r.device, time_ns=r.time_ns, lost=lost, **values)
