"""Stored StreamBatch fragments parse back into exactly the readings and markers given."""

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.convert import marker_rec, reading_pb, readings
from parawatt_proto.ownership import token_sha256
from parawatt_proto.records import MarkerRec, ReadingRec
from power_daemon.model import Sample
from power_daemon.serve import codec


def test_fragments_concatenate_into_a_valid_stream_batch():
    ok = Sample(device=1, time_ns=1_800_000_000_000_000_000, power_w=0.0, energy_j=12.5)
    lost = Sample(device=0, time_ns=1_800_000_000_000_000_001, lost=True)
    marker = pb.Marker(run_id="r", kind=pb.STEP_END, step=300, metrics={"loss": 1.5})
    marker.run_token = b"secret"
    taken = marker_rec(marker, at_intake=True)
    assert taken.token_sha256 == token_sha256(b"secret") and taken.kind == "step_end"
    resolved = MarkerRec("r", 0, "step_end", 0, 300, 1, device_uuid="GPU-x", hostname="h")
    payloads = [
        codec.encode_reading(7, ok),
        codec.encode_marker(marker, 8, resolved),
        codec.encode_reading(9, lost),
    ]
    batch = pb.StreamBatch.FromString(codec.batch_bytes("boot", 7, payloads, missed=3))
    assert (batch.boot_id, batch.first_seq, batch.next_seq, batch.missed) == ("boot", 7, 10, 3)
    r_ok, r_lost = batch.readings
    assert r_ok == reading_pb(7, 1, ok)
    assert r_ok.HasField("power_w") and r_ok.power_w == 0.0  # zero is a value, not "absent"
    assert not r_ok.HasField("temperature_c")
    assert r_lost.status == pb.DEVICE_STATUS_LOST and not r_lost.HasField("power_w")
    (m,) = batch.markers
    assert (m.seq, m.device_uuid, m.hostname, m.metrics["loss"]) == (8, "GPU-x", "h", 1.5)
    assert m.run_token == b""  # the secret never leaves the node
    assert readings(batch, {0: "GPU-0", 1: "GPU-1"}) == [
        ReadingRec(7, "GPU-1", ok.time_ns, power_w=0.0, energy_j=12.5),
        ReadingRec(9, "GPU-0", lost.time_ns, lost=True),
    ]
