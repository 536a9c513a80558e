"""The daemon under user abuse: many streams, clients that leave mid-stream, huge batches."""

import threading
import time

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


def test_streams_beyond_max_streams_are_refused_and_markers_still_get_through(start_sim_daemon):
    d = start_sim_daemon(max_streams=2)
    with daemon_stub(d.address) as stub:
        streams = [stub.Subscribe(pb.SubscribeRequest(), timeout=30) for _ in range(2)]
        for s in streams:
            next(s)  # both are open and hold their server threads
        with pytest.raises(grpc.RpcError) as err:
            next(stub.Subscribe(pb.SubscribeRequest(), timeout=5))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 streams are open" in err.value.details()
        ack = stub.SendMarkers(pb.MarkerBatch(markers=[marker(pb.RUN_START)]), timeout=5)
        assert ack.accepted == 1
        streams[0].cancel()  # a slot frees up once its client leaves
        assert wait_for(lambda: d.daemon.service.streams.open == 1)
        assert next(stub.Subscribe(pb.SubscribeRequest(), timeout=5)).boot_id
        streams[1].cancel()


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
