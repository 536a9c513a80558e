"""Marker intake: validation rules (pure) and the SendMarkers RPC (all-or-nothing)."""

import math
import time

import grpc
import pytest

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.records import MarkerRec
from parawatt_proto.validate import marker_problem
from power_daemon.markers import resolve
from tests.daemon.daemon_helpers import catch_up, daemon_stub, marker

GOOD = pb.Marker(run_id="run-1", kind=pb.STEP_START, step=3, time_ns=1_700_000_000_000_000_000)

BAD_MARKERS = {
    "unknown kind 0": pb.Marker(run_id="r", kind=0, time_ns=1),
    "unknown kind 42": pb.Marker(run_id="r", kind=42, time_ns=1),
    "missing run_id": pb.Marker(kind=pb.RUN_START, time_ns=1),
    "negative step -1": pb.Marker(run_id="r", kind=pb.STEP_END, step=-1, time_ns=1),
    "negative epoch -2": pb.Marker(run_id="r", kind=pb.EPOCH_START, epoch=-2, time_ns=1),
    "negative rank -1": pb.Marker(run_id="r", kind=pb.RUN_START, rank=-1, time_ns=1),
    "time_ns must be > 0": pb.Marker(run_id="r", kind=pb.RUN_START, time_ns=0),
    "is not finite (nan)": pb.Marker(
        run_id="r", kind=pb.STEP_END, time_ns=1, metrics={"loss": math.nan}
    ),
    "is not finite (inf)": pb.Marker(
        run_id="r", kind=pb.STEP_END, time_ns=1, metrics={"loss": math.inf}
    ),
    "100 metrics": pb.Marker(
        run_id="r", kind=pb.STEP_END, time_ns=1, metrics={f"m{i}": 1.0 for i in range(100)}
    ),
    "run_id is longer than": pb.Marker(run_id="r" * 300, kind=pb.RUN_START, time_ns=1),
    "oversized": pb.Marker(
        run_id="r", kind=pb.RUN_START, time_ns=1, config=pb.RunConfig(tags={"x": "y" * 70000})
    ),
}


def test_a_good_marker_passes_and_resolve_fills_host_and_device():
    assert marker_problem(GOOD) is None
    m = resolve(MarkerRec("r", 1, "run_start", 0, 0, 1, local_rank=1), "node", ["GPU-a", "GPU-b"])
    assert (m.hostname, m.device_uuid) == ("node", "GPU-b")
    kept = resolve(MarkerRec("r", 0, "run_start", 0, 0, 1, "GPU-x", 0, "h"), "node", ["GPU-a"])
    assert (kept.hostname, kept.device_uuid) == ("h", "GPU-x")
    beyond = resolve(MarkerRec("r", 0, "run_start", 0, 0, 1, local_rank=5), "node", ["GPU-a"])
    assert beyond.device_uuid == ""


def test_resolve_names_a_device_by_the_uuid_its_readings_carry():
    parent = {"MIG-1": "GPU-b"}.get
    mig = resolve(
        MarkerRec("r", 0, "run_start", 0, 0, 1, "MIG-1"), "n", ["GPU-a"], lambda u: parent(u, u)
    )
    assert mig.device_uuid == "GPU-b"
    filled = resolve(MarkerRec("r", 0, "run_start", 0, 0, 1), "n", ["GPU-a"], lambda u: "never")
    assert filled.device_uuid == "GPU-a"  # the daemon's own GPU UUIDs are canonical already


def test_the_validator_names_the_reason_and_checks_the_clock_window_when_given_one():
    assert marker_problem(pb.Marker(kind=pb.RUN_START, time_ns=1)) == "missing run_id"
    now = GOOD.time_ns + 2 * 86_400 * 10**9
    assert "from the daemon's clock" in marker_problem(GOOD, now)
    assert marker_problem(GOOD, now, max_skew_ns=3 * 86_400 * 10**9) is None


@pytest.mark.parametrize("reason", list(BAD_MARKERS))
def test_each_bad_marker_rejects_the_whole_batch_with_invalid_argument(sim_daemon, reason):
    core = sim_daemon.daemon.core
    good = marker(pb.RUN_START)
    with daemon_stub(sim_daemon.address) as stub:
        before = core.buffer.next_seq
        with pytest.raises(grpc.RpcError) as err:
            stub.SendMarkers(pb.MarkerBatch(markers=[good, BAD_MARKERS[reason]]), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("marker 1: ") and reason in err.value.details()
        # Nothing of the batch was stored, and the daemon still serves.
        stored = [m for b in catch_up(stub, from_seq=before) for m in b.markers]
        assert stored == []
        assert stub.GetInfo(pb.GetInfoRequest(), timeout=5).boot_id == sim_daemon.daemon.boot_id


def test_accepted_markers_get_seqs_host_and_device_and_drive_the_sim(sim_daemon):
    uuid1 = sim_daemon.uuids[1]
    t = time.time_ns()
    batch = [
        marker(pb.RUN_START, local_rank=1, time_ns=t, config=pb.RunConfig(world_size=2)),
        marker(pb.STEP_START, local_rank=1, time_ns=t + 1, metrics={"lr": 0.1}),
        marker(pb.STEP_START, rank=1, device_uuid="GPU-explicit", hostname="other", time_ns=t),
    ]
    with daemon_stub(sim_daemon.address) as stub:
        ack = stub.SendMarkers(pb.MarkerBatch(markers=batch), timeout=5)
        stored = [m for b in catch_up(stub) for m in b.markers]
    assert ack.accepted == 3
    assert [m.seq for m in stored] == list(range(ack.next_seq - 3, ack.next_seq))
    assert [m.device_uuid for m in stored] == [uuid1, uuid1, "GPU-explicit"]
    assert [m.hostname for m in stored[:2]] == [sim_daemon.daemon.core.hostname] * 2
    assert stored[2].hostname == "other"
    assert stored[0].config.world_size == 2 and stored[1].metrics["lr"] == 0.1
    # Device 1 is now busy (a step is open on it), device 0 still idle: ask for a time a few
    # ramp constants ahead (the sim's trace extends into the future until the next marker).
    now = time.time_ns() + 300_000_000
    backend = sim_daemon.backend
    assert backend.true_power_w(uuid1, now) > 250
    assert backend.true_power_w(sim_daemon.uuids[0], now) < 80


def test_an_empty_batch_is_accepted(sim_daemon):
    with daemon_stub(sim_daemon.address) as stub:
        ack = stub.SendMarkers(pb.MarkerBatch(), timeout=5)
    assert ack.accepted == 0 and ack.next_seq >= 1
