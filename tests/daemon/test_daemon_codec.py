"""Stored StreamBatch fragments parse back into exactly the readings and markers given."""

from parawatt_proto import parawatt_pb2 as pb
from power_daemon import codec
from power_daemon.model import MarkerData, Sample


def test_fragments_concatenate_into_a_valid_stream_batch():
    ok = Sample(device=1, time_ns=1_800_000_000_000_000_000, power_w=0.0, energy_j=12.5)
    lost = Sample(device=0, time_ns=1_800_000_000_000_000_001, lost=True)
    marker = pb.Marker(run_id="r", kind=pb.STEP_END, step=300, metrics={"loss": 1.5})
    resolved = MarkerData("r", 0, pb.STEP_END, 0, 300, 1, device_uuid="GPU-x", hostname="h")
    payloads = [
        codec.encode_reading(7, ok),
        codec.encode_marker(marker, 8, resolved),
        codec.encode_reading(9, lost),
    ]
    batch = pb.StreamBatch.FromString(codec.batch_bytes("boot", 7, payloads, missed=3))
    assert (batch.boot_id, batch.first_seq, batch.next_seq, batch.missed) == ("boot", 7, 10, 3)
    r_ok, r_lost = batch.readings
    assert r_ok == codec.reading_pb(7, ok)
    assert r_ok.HasField("power_w") and r_ok.power_w == 0.0  # zero is a value, not "absent"
    assert not r_ok.HasField("temperature_c")
    assert r_lost.status == pb.DEVICE_STATUS_LOST and not r_lost.HasField("power_w")
    (m,) = batch.markers
    assert (m.seq, m.device_uuid, m.hostname, m.metrics["loss"]) == (8, "GPU-x", "h", 1.5)
    assert codec.sample(r_ok) == ok and codec.sample(r_lost) == lost
