"""The daemon over real gRPC on a free loopback port: info, stream, resume, loss, health."""

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from parawatt_proto import parawatt_pb2 as pb
from power_daemon.config import DEFAULT_INTERVAL_MS
from tests.daemon.daemon_helpers import catch_up, daemon_stub, seqs

SLOW = 60_000  # ms: the sampler ticks once at start; tests add readings with core.sample_once()


def test_get_info_and_latest_describe_the_sim_node(sim_daemon):
    with daemon_stub(sim_daemon.address) as stub:
        info = stub.GetInfo(pb.GetInfoRequest(), timeout=5)
        latest = stub.GetLatest(pb.GetLatestRequest(), timeout=5)
    assert info.backend == "sim" and info.boot_id == sim_daemon.daemon.boot_id
    assert [d.uuid for d in info.devices] == sim_daemon.uuids
    assert info.devices[1].index == 1 and info.devices[0].has_energy_counter
    assert info.interval_ns == 21_700_000  # the default: runs free against a 100 ms counter
    assert info.capacity >= 10 * 60 * 8 * 1000 / DEFAULT_INTERVAL_MS  # 10 min of 8 GPUs
    assert {r.device for r in latest.readings} == {0, 1}
    assert all(r.HasField("power_w") and r.HasField("energy_j") for r in latest.readings)


def test_stream_covers_every_seq_once_in_batches_and_carries_info_first(start_sim_daemon):
    d = start_sim_daemon(interval_ms=SLOW)
    for _ in range(149):
        d.daemon.core.sample_once()
    with daemon_stub(d.address) as stub:
        batches = catch_up(stub, max_batch=100)
    assert seqs(batches) == list(range(1, 301))
    assert [len(b.readings) for b in batches] == [100, 100, 100]
    assert batches[0].info.boot_id == d.daemon.boot_id and len(batches[0].info.devices) == 2
    assert not batches[1].HasField("info")
    assert all(b.boot_id == d.daemon.boot_id and b.missed == 0 for b in batches)
    with daemon_stub(d.address) as stub:
        assert len(catch_up(stub)[0].readings) == 100  # the default batch size


def test_resume_after_reconnect_has_no_gap_and_no_duplicate(start_sim_daemon):
    d = start_sim_daemon(interval_ms=SLOW)
    core = d.daemon.core
    for _ in range(20):
        core.sample_once()
    with daemon_stub(d.address) as stub:
        first = catch_up(stub, max_batch=7)
    got = seqs(first)
    for _ in range(10):
        core.sample_once()
    with daemon_stub(d.address) as stub:  # a new connection, as after a collector restart
        second = catch_up(stub, from_seq=got[-1] + 1, boot_id=d.daemon.boot_id)
    assert second[0].missed == 0 and not second[0].boot_changed
    assert got + seqs(second) == list(range(1, core.buffer.next_seq))


def test_follower_receives_new_items_live_and_ends_cleanly_when_the_daemon_stops(sim_daemon):
    received, done = [], threading.Event()
    with daemon_stub(sim_daemon.address) as stub:

        def follow():
            for batch in stub.Subscribe(pb.SubscribeRequest(max_batch=100), timeout=30):
                received.append(batch)
                if sum(len(b.readings) for b in received) >= 40:
                    done.set()
            done.set()

        thread = threading.Thread(target=follow)
        thread.start()
        assert done.wait(10), "no live readings arrived"
        sim_daemon.daemon.close()
        thread.join(10)
        assert not thread.is_alive(), "the stream did not end when the daemon stopped"
    assert seqs(received) == list(range(1, len(seqs(received)) + 1))


def test_asking_for_evicted_data_reports_how_much_was_missed(start_sim_daemon):
    d = start_sim_daemon(interval_ms=SLOW, buffer_capacity=1000)
    for _ in range(999):
        d.daemon.core.sample_once()  # 2000 readings: seqs 1..1000 evicted
    with daemon_stub(d.address) as stub:
        batches = catch_up(stub, from_seq=401, boot_id=d.daemon.boot_id, max_batch=5000)
        oldest = catch_up(stub, from_seq=0)
    assert batches[0].missed == 600 and batches[0].first_seq == 1001
    assert seqs(batches) == list(range(1001, 2001))
    assert oldest[0].missed == 0 and oldest[0].first_seq == 1001


def test_another_boot_id_starts_at_the_oldest_item_and_says_so(start_sim_daemon):
    d = start_sim_daemon(interval_ms=SLOW)
    with daemon_stub(d.address) as stub:
        batches = catch_up(stub, from_seq=12345, boot_id="an-earlier-boot")
    assert batches[0].boot_changed and batches[0].missed == 0
    assert seqs(batches)[0] == 1


def test_from_seq_beyond_this_boot_is_out_of_range(sim_daemon):
    with daemon_stub(sim_daemon.address) as stub, pytest.raises(grpc.RpcError) as err:
        catch_up(stub, from_seq=10**9, boot_id=sim_daemon.daemon.boot_id)
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE


def test_a_follower_overtaken_by_eviction_gets_data_loss(start_sim_daemon):
    d = start_sim_daemon(interval_ms=SLOW, buffer_capacity=1000)
    with daemon_stub(d.address) as stub:
        stream = stub.Subscribe(pb.SubscribeRequest(max_batch=1), timeout=30)
        next(stream)
        for _ in range(3000):  # 6000 readings while the client does not read
            d.daemon.core.sample_once()
        with pytest.raises(grpc.RpcError) as err:
            for _ in stream:
                pass
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert "resubscribe" in err.value.details()


def test_health_and_reflection_are_served(sim_daemon):
    with grpc.insecure_channel(sim_daemon.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "parawatt.v1.PowerDaemon"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        db = ProtoReflectionDescriptorDatabase(channel)
        assert "parawatt.v1.PowerDaemon" in db.get_services()
        assert "grpc.health.v1.Health" in db.get_services()
        assert db.FindFileContainingSymbol("parawatt.v1.StreamBatch").package == "parawatt.v1"


def test_two_daemons_simulate_two_nodes(start_sim_daemon):
    a = start_sim_daemon(hostname="node-a")
    b = start_sim_daemon(hostname="node-b", sim_devices=3)
    with daemon_stub(a.address) as sa, daemon_stub(b.address) as sb:
        ia, ib = sa.GetInfo(pb.GetInfoRequest()), sb.GetInfo(pb.GetInfoRequest())
    assert (ia.hostname, ib.hostname) == ("node-a", "node-b")
    assert len(ib.devices) == 3 and ia.boot_id != ib.boot_id
    assert not set(a.uuids) & set(b.uuids)


def test_a_columnar_stream_holds_the_same_readings_and_markers_as_rows(start_sim_daemon):
    """SubscribeRequest.columnar (what the collector asks for): the batch's readings as one
    ReadingColumns, markers as messages, every seq once; decoded, the very records rows give."""
    from parawatt_proto import convert
    from tests.daemon.daemon_helpers import marker

    d = start_sim_daemon(interval_ms=SLOW)
    core = d.daemon.core
    for _ in range(30):
        core.sample_once()
    with daemon_stub(d.address) as stub:
        stub.SendMarkers(pb.MarkerBatch(markers=[marker(pb.RUN_START)]), timeout=5)
    for _ in range(30):
        core.sample_once()
    with daemon_stub(d.address) as stub:
        rows = catch_up(stub, max_batch=50)
        cols = catch_up(stub, max_batch=50, columnar=True)
    uuids = {i: u for i, u in enumerate(d.uuids)}
    assert [(b.first_seq, b.next_seq) for b in cols] == [(b.first_seq, b.next_seq) for b in rows]
    assert all(not b.readings and convert.column_count(b.columns) for b in cols)
    got = sorted(
        [s for b in cols for s in b.columns.seq] + [m.seq for b in cols for m in b.markers]
    )
    assert got == list(range(1, core.buffer.next_seq))
    assert [m for b in cols for m in b.markers] == [m for b in rows for m in b.markers]
    from_rows = [r for b in rows for r in convert.readings(b, uuids)]
    from_cols = [r for b in cols for r in convert.reading_block(b.columns, uuids).rows()]
    assert from_cols == from_rows
    assert len(from_rows) == core.buffer.next_seq - 2  # every item but the one marker
