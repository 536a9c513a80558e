"""The daemon under user abuse: many streams, clients that leave mid-stream, huge batches."""

import shutil
import tempfile
import threading
import time
from pathlib import Path

import grpc
import pytest

from parawatt_proto import parawatt_pb2 as pb
from power_daemon.markers import MAX_MARKERS_PER_BATCH
from tests.daemon.daemon_helpers import daemon_stub, marker


def wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def socket_path():
    """A short path for a marker socket (pytest's tmp paths can pass 107 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="pw-robust-"))
    yield directory / "m.sock"
    shutil.rmtree(directory, ignore_errors=True)


def test_streams_beyond_max_streams_are_refused_and_markers_still_get_through(
    start_sim_daemon, socket_path
):
    d = start_sim_daemon(max_streams=2, marker_socket=str(socket_path))
    # Two peers (one peer gets at most half the slots): loopback TCP and the Unix socket.
    with daemon_stub(d.address) as stub, daemon_stub(f"unix:{socket_path}") as local:
        streams = [s.Subscribe(pb.SubscribeRequest(), timeout=30) for s in (stub, local)]
        for s in streams:
            next(s)  # both are open and hold their server threads
        for s in (stub, local):
            with pytest.raises(grpc.RpcError) as err:
                next(s.Subscribe(pb.SubscribeRequest(), timeout=5))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "2 streams are open" in err.value.details()
        ack = stub.SendMarkers(pb.MarkerBatch(markers=[marker(pb.RUN_START)]), timeout=5)
        assert ack.accepted == 1
        streams[0].cancel()  # a slot frees up once its client leaves
        assert wait_for(lambda: d.daemon.service.streams.open == 1)
        assert next(stub.Subscribe(pb.SubscribeRequest(), timeout=5)).boot_id
        streams[1].cancel()


def test_one_peer_holding_its_share_of_streams_cannot_lock_out_another(
    start_sim_daemon, socket_path
):
    """g6_sub.py held all 32 slots from one process and the collector got RESOURCE_EXHAUSTED:
    one peer now gets half the slots, and another peer (here the Unix socket; in a deployment
    the collector's host) still gets one."""
    d = start_sim_daemon(max_streams=4, marker_socket=str(socket_path))
    with daemon_stub(d.address) as hog, daemon_stub(f"unix:{socket_path}") as other:
        held = [hog.Subscribe(pb.SubscribeRequest(), timeout=30) for _ in range(2)]
        for s in held:
            next(s)
        with pytest.raises(grpc.RpcError) as err:
            next(hog.Subscribe(pb.SubscribeRequest(), timeout=5))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 streams from ipv4:127.0.0.1 are open" in err.value.details()
        assert next(other.Subscribe(pb.SubscribeRequest(no_follow=True), timeout=5)).boot_id
        for s in held:
            s.cancel()
        assert wait_for(lambda: d.daemon.service.streams.open == 0)
        assert d.daemon.service.streams._by_peer == {}  # nothing kept for peers that left


def test_clients_that_leave_mid_stream_free_their_slots_and_threads(start_sim_daemon):
    before = {t.ident for t in threading.enumerate()}
    d = start_sim_daemon(max_streams=4)
    for i in range(40):
        with daemon_stub(d.address) as stub:
            stream = stub.Subscribe(pb.SubscribeRequest(max_batch=10), timeout=30)
            next(stream)
            if i % 2:
                stream.cancel()  # else the channel just closes under it
        # Never more than max_streams at once, so none of these may be refused.
        assert wait_for(lambda: d.daemon.service.streams.open == 0), f"stream {i} is stuck"
    d.daemon.close()
    assert wait_for(lambda: not {t.ident for t in threading.enumerate()} - before)


def test_a_batch_beyond_the_limit_is_refused_whole_and_one_at_the_limit_is_taken(sim_daemon):
    core = sim_daemon.daemon.core
    batch = [marker(pb.STEP_START, step=i) for i in range(MAX_MARKERS_PER_BATCH + 1)]
    with daemon_stub(sim_daemon.address) as stub:
        before = core.buffer.next_seq
        with pytest.raises(grpc.RpcError) as err:
            stub.SendMarkers(pb.MarkerBatch(markers=batch), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most" in err.value.details()
        ack = stub.SendMarkers(pb.MarkerBatch(markers=batch[:-1]), timeout=30)
        assert ack.accepted == MAX_MARKERS_PER_BATCH
        assert ack.next_seq - before >= MAX_MARKERS_PER_BATCH
        assert stub.GetInfo(pb.GetInfoRequest(), timeout=5).boot_id == core.boot_id
