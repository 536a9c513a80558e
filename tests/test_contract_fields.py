"""The contract's one mapping (parawatt_proto/convert.py, records.py, fields.py) against the
generated descriptors: every field of a message reaches its plain record and back, or is named
below as left out on purpose, so a new field in the .proto cannot be dropped silently."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from google.protobuf.descriptor import FieldDescriptor

from parawatt_proto import convert
from parawatt_proto import fields as contract
from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.records import ReadingRec
from power_daemon.model import DeviceKind, DeviceSpec, Sample
from power_daemon.serve import codec

# Fields a decoder leaves out on purpose. Anything else must change the record when it changes.
NOT_DECODED = {
    "DeviceInfo": {
        "pci_bus_id",  # node-local: the daemon's own /metrics labels by it; a device is its uuid
        "power_scope",  # shown by the daemon (probe, /metrics); the collector does not store it
    },
    "NodeInfo": {
        # The ring buffer and the daemon's clock at the moment it answered: the subscriber
        # resumes from each batch's own seq range and stamps what it received with its own clock.
        "first_seq",
        "next_seq",
        "capacity",
        "time_ns",
    },
    "Reading": set(),
    "Marker, streamed": {"run_token"},  # the secret never leaves the node: only its hash does
    "Marker, at intake": {"run_token_sha256"},  # a rank has no say over it: hashed from run_token
    "RunConfig": set(),
}
# Fields an encoder (the daemon's side) leaves out on purpose.
NOT_ENCODED: dict[str, set[str]] = {"Reading": set(), "DeviceInfo": set(), "NodeInfo": set()}

_UUIDS = {0: "gpu-0", 7: "gpu-7"}
DECODERS = {
    "DeviceInfo": (pb.DeviceInfo, {}, convert.device_rec),
    "NodeInfo": (pb.NodeInfo, {}, convert.node_rec),
    "Reading": (pb.Reading, {}, lambda m: convert.readings(pb.StreamBatch(readings=[m]), _UUIDS)),
    "Marker, streamed": (pb.Marker, {"kind": pb.RUN_START}, convert.marker_rec),
    "Marker, at intake": (
        pb.Marker,
        {"kind": pb.RUN_START},
        lambda m: convert.marker_rec(m, at_intake=True),
    ),
    "RunConfig": (pb.RunConfig, {}, convert.run_config),
}
# A field read only in a marker of one kind is tried on a marker of that kind.
BASE_FOR = {"status": {"kind": pb.RUN_END}, "config": {"kind": pb.RUN_START}}


def _value(f: FieldDescriptor):
    """A value of field f that differs from its default."""
    message = f.message_type
    if message is not None and message.GetOptions().map_entry:
        return {"k": _value(message.fields_by_name["value"])}
    if message is not None:
        one = {"RunConfig": pb.RunConfig(world_size=3), "DeviceInfo": pb.DeviceInfo(uuid="u")}
        value = one[message.name]
        return [value] if f.is_repeated else value
    if f.enum_type is not None:
        return f.enum_type.values[-1].number
    return {
        FieldDescriptor.TYPE_STRING: "x",
        FieldDescriptor.TYPE_BYTES: b"x",
        FieldDescriptor.TYPE_BOOL: True,
        FieldDescriptor.TYPE_DOUBLE: 7.5,
        FieldDescriptor.TYPE_FLOAT: 7.5,
    }.get(f.type, 7)


def test_every_field_is_decoded_or_left_out_on_purpose():
    for name, (message, base, decode) in DECODERS.items():
        ignored = []
        for f in message.DESCRIPTOR.fields:
            start = {**base, **BASE_FOR.get(f.name, {})} if message is pb.Marker else base
            changed = decode(message(**{**start, f.name: _value(f)})) != decode(message(**start))
            if not changed:
                ignored.append(f.name)
        assert set(ignored) == NOT_DECODED[name], name
        assert NOT_DECODED[name] <= set(message.DESCRIPTOR.fields_by_name), name


def _full(record_type, **given):
    """An instance of a daemon dataclass with every field set to a non-default value."""
    kind = DeviceKind.DRAM
    sample = {"str": "x", "bool": True, "int": 7, "float | None": 7.5, "DeviceKind": kind}
    values = {f.name: sample[f.type] for f in dataclasses.fields(record_type)}
    return record_type(**{**values, **given})


def _daemon() -> SimpleNamespace:
    """What codec.node_info reads of a running daemon, every value set."""
    return SimpleNamespace(
        hostname="h", boot_id="b", started_ns=1, devices=[_full(DeviceSpec)],
        backend=SimpleNamespace(name="sim", driver_version="1"),
        config=SimpleNamespace(interval_ns=20_000_000),
        buffer=SimpleNamespace(bounds=lambda: (5, 9), capacity=100),
    )  # fmt: skip


def test_every_field_is_encoded_or_left_out_on_purpose():
    encoded = {
        "Reading": convert.reading_pb(9, 3, _full(Sample)),
        "DeviceInfo": convert.device_pb(3, _full(DeviceSpec)),
        "NodeInfo": codec.node_info(_daemon()),
    }
    for name, msg in encoded.items():
        present = {f.name for f, _ in msg.ListFields()}
        assert present == set(msg.DESCRIPTOR.fields_by_name) - NOT_ENCODED[name], name


def _optional(message) -> tuple[str, ...]:
    return tuple(
        f.name for f in message.DESCRIPTOR.fields if f.has_presence and f.message_type is None
    )


def test_the_reading_field_list_matches_the_proto():
    assert _optional(pb.Reading) == contract.READING_FIELDS


def test_enum_names_cover_every_value_but_unspecified():
    for enum, names in (
        (pb.DeviceKind, contract.DEVICE_KIND_NAMES),
        (pb.MarkerKind, contract.MARKER_KIND_NAMES),
        (pb.RunStatus, contract.RUN_STATUS_NAMES),
    ):
        assert set(names) == set(enum.values()) - {0}, enum.DESCRIPTOR.name
    assert contract.MARKER_KIND_OF["run_end"] == pb.RUN_END


def test_the_hand_written_reading_decoder_keeps_the_field_order():
    """convert.readings builds ReadingRec positionally (the hot path): each value must land in
    the field of its name, in both the daemon's Sample and the record."""
    assert tuple(f.name for f in dataclasses.fields(ReadingRec))[4:-1] == contract.READING_FIELDS
    assert tuple(f.name for f in dataclasses.fields(Sample))[3:-1] == contract.READING_FIELDS
    values = {name: float(i + 1) for i, name in enumerate(contract.READING_FIELDS)}
    msg = convert.reading_pb(7, 0, Sample(device=0, time_ns=5, power_from_avg=True, **values))
    (rec,) = convert.readings(pb.StreamBatch(readings=[msg]), {0: "gpu-0"})
    assert rec == ReadingRec(7, "gpu-0", 5, power_from_avg=True, **values)


def test_a_zero_reading_is_zero_and_an_unset_one_is_none():
    READING_FIELDS = contract.READING_FIELDS
    zeros = pb.Reading(seq=1, device=0, time_ns=5, **{f: 0.0 for f in READING_FIELDS})
    unset = pb.Reading(seq=2, device=0, time_ns=6)
    some = pb.Reading(seq=3, device=0, time_ns=7, power_w=-0.0, energy_j=12.5, gpu_util_pct=0.0)
    batch = pb.StreamBatch.FromString(
        pb.StreamBatch(readings=[zeros, unset, some]).SerializeToString()
    )
    a, b, c = convert.readings(batch, {0: "GPU-0"})
    assert all(getattr(a, f) == 0.0 for f in READING_FIELDS)
    assert all(getattr(b, f) is None for f in READING_FIELDS)
    assert (c.power_w, c.energy_j, c.gpu_util_pct, c.temperature_c) == (0.0, 12.5, 0.0, None)


def _one_column_row(**changed) -> pb.ReadingColumns:
    """A ReadingColumns of one reading, every float 1.0, with `changed` put in."""
    values = {f.name: [1.0] for f in pb.ReadingColumns.DESCRIPTOR.fields}
    values.update(seq=[3], device=[0], time_ns=[5], status=[0], power_from_avg=[False])
    return pb.ReadingColumns(**{**values, **changed})


def test_every_reading_column_is_decoded_and_encoded():
    """ReadingColumns (the collector's hot path) maps every field, both ways, and holds the same
    fields as Reading, so a field added to one and not the other fails here."""
    assert [f.name for f in pb.ReadingColumns.DESCRIPTOR.fields] == [
        f.name for f in pb.Reading.DESCRIPTOR.fields
    ]
    uuids = {0: "gpu-0", 7: "gpu-7"}
    base = convert.reading_block(_one_column_row(), uuids).rows()
    for f in pb.ReadingColumns.DESCRIPTOR.fields:
        value = _value(f)
        changed = convert.reading_block(_one_column_row(**{f.name: [value]}), uuids).rows()
        assert changed != base, f.name
    full = convert.reading_pb(9, 7, _full(Sample))
    cols = convert.reading_columns_pb([full])
    assert {f.name for f, _ in cols.ListFields()} == set(
        pb.ReadingColumns.DESCRIPTOR.fields_by_name
    )
    (rec,) = convert.reading_block(cols, uuids).rows()
    (row,) = convert.readings(pb.StreamBatch(readings=[full]), uuids)
    assert rec == row


def test_a_column_value_that_is_unset_in_a_row_is_nan_and_decodes_to_none():
    unset = pb.Reading(seq=2, device=0, time_ns=6, power_w=0.0)
    cols = convert.reading_columns_pb([unset])
    (rec,) = convert.reading_block(cols, {0: "g"}).rows()
    assert rec.power_w == 0.0 and all(getattr(rec, f) is None for f in contract.READING_FIELDS[1:])
