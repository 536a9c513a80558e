"""The subscriber against a stand-in daemon on loopback: rows from a daemon that ignores
SubscribeRequest.columnar still arrive, and a malformed ReadingColumns is refused whole (no
reading of it used, the stream dropped and resumed, no traceback)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent import futures

import grpc
import pytest

from collector.ingest.subscriber import Subscriber
from parawatt_proto import parawatt_pb2 as pb

SERVICE = "parawatt.v1.PowerDaemon"
T0 = 1_800_000_000_000_000_000


class StandIn:
    """Answers Subscribe with the messages of `script(request)` then holds the stream open."""

    def __init__(self, script) -> None:
        self.script, self.requests = script, []

    def Subscribe(self, request, context):
        self.requests.append(request)
        yield from self.script(request)
        while context.is_active():  # a daemon's stream stays open until the client goes
            threading.Event().wait(0.05)


@pytest.fixture
def serve():
    servers = []

    def start(daemon: StandIn) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_stream_rpc_method_handler(
            daemon.Subscribe,
            request_deserializer=pb.SubscribeRequest.FromString,
            response_serializer=pb.StreamBatch.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, {"Subscribe": handler})]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for s in servers:
        s.stop(0)


def _info() -> pb.NodeInfo:
    return pb.NodeInfo(hostname="n1", boot_id="b1", backend="stand-in",
                       devices=[pb.DeviceInfo(index=0, uuid="GPU-0")])  # fmt: skip


def _collect(address: str, until: int, timeout_s: float = 20.0):
    got: queue.Queue = queue.Queue()
    sub = Subscriber(address, lambda chunk: got.put(chunk) or True, backoff_s=(0.05, 0.2)).start()
    chunks = []
    try:
        while sum(len(c.take_readings()) for c in chunks) < until:
            chunks.append(got.get(timeout=timeout_s))
    finally:
        sub.close()
    return sub, chunks


def test_a_daemon_that_streams_rows_is_still_read(serve):
    def rows(request):
        assert request.columnar  # the collector asks for columns ...
        yield pb.StreamBatch(
            boot_id="b1",
            first_seq=1,
            next_seq=3,
            info=_info(),
            readings=[
                pb.Reading(seq=1, device=0, time_ns=T0, power_w=100.0, energy_j=5.0),
                pb.Reading(seq=2, device=0, time_ns=T0 + 10, power_w=0.0),
            ],
        )  # fmt: skip  ... and takes rows from a daemon that does not know them

    _, chunks = _collect(serve(StandIn(rows)), until=2)
    (a, b) = [r for c in chunks for r in c.take_readings().rows()]
    assert (a.seq, a.device_uuid, a.power_w, a.energy_j) == (1, "GPU-0", 100.0, 5.0)
    assert (b.power_w, b.energy_j) == (0.0, None)


def test_columns_of_different_lengths_are_refused_whole(serve, caplog):
    def script(request):
        if len(daemon.requests) == 1:  # first stream: a malformed message
            yield pb.StreamBatch(boot_id="b1", first_seq=1, next_seq=3, info=_info(),
                                 columns=pb.ReadingColumns(seq=[1, 2], device=[0, 0],
                                                           time_ns=[T0]))  # fmt: skip
            return
        cols = pb.ReadingColumns(seq=[1], device=[0], time_ns=[T0], status=[0], power_w=[50.0],
                                 power_avg_w=[50.0], energy_j=[1.0], gpu_util_pct=[1.0],
                                 mem_util_pct=[1.0], memory_used_bytes=[1.0],
                                 temperature_c=[30.0], sm_clock_mhz=[1.0], mem_clock_mhz=[1.0],
                                 power_from_avg=[False])  # fmt: skip
        yield pb.StreamBatch(boot_id="b1", first_seq=1, next_seq=2, info=_info(), columns=cols)

    daemon = StandIn(script)
    with caplog.at_level(logging.WARNING):
        sub, chunks = _collect(serve(daemon), until=1)
    (r,) = [r for c in chunks for r in c.take_readings().rows()]
    assert (r.seq, r.power_w) == (1, 50.0)  # from the second stream only
    assert len(daemon.requests) >= 2 and daemon.requests[1].from_seq == 0  # nothing was taken
    text = caplog.text
    assert "malformed stream message" in text and "seq has 2 entries" in text
    assert "Traceback" not in text


def test_a_boot_id_that_cannot_be_stored_is_refused(serve, caplog):
    """A boot id the database cannot hold (too long, control characters) cannot be resumed from
    or stored: the stream is refused with the reason, and the collector keeps asking."""

    def script(request):
        yield pb.StreamBatch(boot_id="b" * 65, first_seq=1, next_seq=2, info=_info(),
                             readings=[pb.Reading(seq=1, device=0, time_ns=T0, power_w=1.0)])  # fmt: skip

    daemon = StandIn(script)
    got: queue.Queue = queue.Queue()
    with caplog.at_level(logging.WARNING):
        sub = Subscriber(serve(daemon), lambda c: got.put(c) or True, backoff_s=(0.05, 0.2))
        sub.start()
        try:
            deadline = time.monotonic() + 20.0
            while len(daemon.requests) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            sub.close()
    assert len(daemon.requests) >= 2  # refused, and asked again
    assert got.empty()
    assert "malformed stream message: boot_id is longer than 64 characters" in caplog.text
    assert sub.health.last_error.startswith("malformed stream message: boot_id")
