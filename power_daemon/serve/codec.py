"""The daemon's framing of the stream, and its NodeInfo; each message's fields are mapped by the
contract (parawatt_proto.convert: reading_pb, stored_marker, device_pb).

Readings and markers are stored as ready-made StreamBatch fragments: the field tag and length
of the repeated `readings` (4) / `markers` (5) field followed by the message bytes. A batch on
the wire is then a small header message concatenated with fragments (protobuf merges
concatenated messages and keeps repeated fields in order), so streaming costs no per-reading
Python work: the difference between ~40k and several hundred thousand readings per second.
A subscriber that asks for columns (SubscribeRequest.columnar, what the collector does) gets the
batch's reading fragments parsed back (in C) and re-packed as one ReadingColumns: a few us a
reading here, on the node, so that the collector reading hundreds of nodes decodes in C.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.convert import device_pb, reading_columns_pb, reading_pb, stored_marker
from parawatt_proto.records import MarkerRec
from power_daemon import __version__
from power_daemon.model import Sample

if TYPE_CHECKING:
    from power_daemon.daemon import Daemon

_READING_TAG = bytes([(4 << 3) | 2])
_MARKER_TAG = bytes([(5 << 3) | 2])
_READING_BYTE = _READING_TAG[0]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_reading(seq: int, s: Sample) -> bytes:
    body = reading_pb(seq, s.device, s).SerializeToString()
    return _READING_TAG + _varint(len(body)) + body


def encode_marker(marker: pb.Marker, seq: int, resolved: MarkerRec) -> bytes:
    body = stored_marker(marker, seq, resolved).SerializeToString()
    return _MARKER_TAG + _varint(len(body)) + body


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
    columnar: bool = False,
) -> bytes:
    header = pb.StreamBatch(
        boot_id=boot_id,
        first_seq=first_seq,
        next_seq=first_seq + len(payloads),
        missed=missed,
        info=info,
        boot_changed=boot_changed,
    )
    if columnar:
        readings = [p for p in payloads if p[0] == _READING_BYTE]
        if readings:
            parsed = pb.StreamBatch.FromString(b"".join(readings)).readings
            header.columns.CopyFrom(reading_columns_pb(parsed))
            payloads = [p for p in payloads if p[0] != _READING_BYTE]
    return header.SerializeToString() + b"".join(payloads)
