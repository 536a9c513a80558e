"""Small helpers for the daemon tests: gRPC stubs, stream collection, marker building."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto import parawatt_pb2_grpc as pb_grpc


@contextmanager
def daemon_stub(address: str) -> Iterator[pb_grpc.PowerDaemonStub]:
    with grpc.insecure_channel(address) as channel:
        yield pb_grpc.PowerDaemonStub(channel)


def catch_up(stub: pb_grpc.PowerDaemonStub, **request) -> list[pb.StreamBatch]:
    """Every batch of a no_follow subscription."""
    return list(stub.Subscribe(pb.SubscribeRequest(no_follow=True, **request), timeout=10))


def seqs(batches: list[pb.StreamBatch]) -> list[int]:
    """All item seqs of the batches, readings and markers merged, in stream order."""
    out: list[int] = []
    for b in batches:
        items = sorted([r.seq for r in b.readings] + [m.seq for m in b.markers])
        assert items == list(range(b.first_seq, b.next_seq)), "batch must cover its range exactly"
        out.extend(items)
    return out


def marker(kind: int, *, step: int = 0, epoch: int = 0, rank: int = 0, **fields) -> pb.Marker:
    fields.setdefault("run_id", "run-1")
    fields.setdefault("time_ns", time.time_ns())
    return pb.Marker(kind=kind, step=step, epoch=epoch, rank=rank, **fields)
