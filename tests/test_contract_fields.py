"""The contract's field lists (parawatt_proto/fields.py) against the generated descriptors, and
the daemon's and the collector's plain records against the lists, so each mapping exists once."""

from __future__ import annotations

from dataclasses import fields

from collector.ingest import convert
from collector.records import ReadingRec
from parawatt_proto import fields as contract
from parawatt_proto import parawatt_pb2 as pb
from power_daemon.codec import reading_pb, sample
from power_daemon.model import Sample


def _optional(message) -> tuple[str, ...]:
    return tuple(
        f.name for f in message.DESCRIPTOR.fields if f.has_presence and f.message_type is None
    )


def test_field_lists_match_the_proto():
    assert _optional(pb.Reading) == contract.READING_FIELDS
    assert set(contract.DEVICE_OPTIONAL_FIELDS) == set(_optional(pb.DeviceInfo))


def test_enum_names_cover_every_value_but_unspecified():
    for enum, names in (
        (pb.DeviceKind, contract.DEVICE_KIND_NAMES),
        (pb.MarkerKind, contract.MARKER_KIND_NAMES),
        (pb.RunStatus, contract.RUN_STATUS_NAMES),
    ):
        assert set(names) == set(enum.values()) - {0}, enum.DESCRIPTOR.name
    assert contract.MARKER_KIND_OF["run_end"] == pb.RUN_END


def test_both_sides_carry_every_reading_field_once():
    assert tuple(f.name for f in fields(ReadingRec))[4:-1] == contract.READING_FIELDS
    assert fields(ReadingRec)[-1].name == fields(Sample)[-1].name == "power_from_avg"
    assert tuple(f.name for f in fields(Sample))[3:-1] == contract.READING_FIELDS
    values = {name: float(i + 1) for i, name in enumerate(contract.READING_FIELDS)}
    msg = reading_pb(7, Sample(device=0, time_ns=5, **values))
    assert sample(msg) == Sample(device=0, time_ns=5, **values)
    batch = pb.StreamBatch(readings=[msg])
    (rec,) = convert.readings(batch, {0: "gpu-0"})
    assert {name: getattr(rec, name) for name in contract.READING_FIELDS} == values
