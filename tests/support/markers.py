"""Read back the markers a daemon holds (through its real Subscribe RPC), for tests.

markers = read_markers(sim_daemon.address, run_id="r1")
counts = count_by_kind(markers)   # {"STEP_END": 12, ...}
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import grpc

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto import parawatt_pb2_grpc as pb_grpc


def read_markers(address: str, run_id: str | None = None) -> list[pb.Marker]:
    """Every marker the daemon's buffer holds (optionally of one run), in sequence order."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.PowerDaemonStub(channel)
        request = pb.SubscribeRequest(from_seq=0, no_follow=True, max_batch=5000)
        out = [m for batch in stub.Subscribe(request, timeout=30) for m in batch.markers]
    return [m for m in out if run_id is None or m.run_id == run_id]


def count_by_kind(markers: list[pb.Marker]) -> Counter:
    return Counter(pb.MarkerKind.Name(m.kind) for m in markers)


def wait_for_markers(
    address: str,
    done: Callable[[list[pb.Marker]], bool],
    run_id: str | None = None,
    timeout_s: float = 30.0,
) -> list[pb.Marker]:
    """Poll until `done(markers)` holds (or the timeout passes); returns the last read."""
    deadline = time.monotonic() + timeout_s
    while True:
        markers = read_markers(address, run_id)
        if done(markers) or time.monotonic() > deadline:
            return markers
        time.sleep(0.05)
