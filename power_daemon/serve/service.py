"""The PowerDaemon gRPC service: a thin adapter from RPCs to the Daemon core.

Hostile input: every request arrives as raw bytes and is parsed here, so an undecodable body
costs one INVALID_ARGUMENT and no memory (and at most one log line per peer host a minute).
SendMarkers checks every marker against the contract's limits (parawatt_proto.validate): one
implausible marker refuses the whole batch with INVALID_ARGUMENT naming it. Markers that run
ownership forbids (parawatt_proto.ownership) are refused one by one instead: the rest of the
batch is stored, and MarkerAck says accepted = stored, rejected = refused. Markers come from the
node's own processes only (--markers-from local: the Unix socket and loopback TCP); any other
peer gets PERMISSION_DENIED.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterator

import grpc
from google.protobuf.message import DecodeError

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.convert import marker_rec, reading_pb
from parawatt_proto.validate import marker_problem
from power_daemon.buffer import StartPlan
from power_daemon.daemon import Daemon
from power_daemon.errors import SubscribeError
from power_daemon.markers import MAX_MARKER_BYTES, MAX_MARKERS_PER_BATCH
from power_daemon.serve import codec

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PowerDaemon"].full_name
_FOLLOW_POLL_S = 1.0  # how often an idle follower checks that its client is still there


class StreamSlots:
    """Counts open streams against a cap, and each peer's against half of it (rounded up), so
    that one peer holding every slot (g6_sub.py: 32 streams it never reads) cannot lock out
    the collector on another host. A peer is its host (peer_host): loopback processes share
    one, and so do all Unix-socket clients (gRPC does not tell their users apart). A slot is
    given back exactly once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.per_peer = (limit + 1) // 2
        self.open = 0
        self._by_peer: dict[str, int] = {}  # only peers with open streams: at most `limit`
        self._lock = threading.Lock()

    def take(self, peer: str = "") -> Callable[[], None] | str:
        """A release function, or why there is no slot."""
        with self._lock:
            if self.open >= self.limit:
                return f"{self.limit} streams are open already (the daemon's max_streams)"
            if self._by_peer.get(peer, 0) >= self.per_peer:
                return (f"{self.per_peer} streams from {peer} are open already (one peer gets "
                        "at most half the daemon's max_streams)")  # fmt: skip
            self.open += 1
            self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self.open -= 1
                    if self._by_peer[peer] == 1:
                        del self._by_peer[peer]
                    else:
                        self._by_peer[peer] -= 1

        return release


def peer_host(peer: str) -> str:
    """gRPC's peer string less its port: "ipv4:10.0.0.7", "ipv6:[::1]"; "unix" for every
    Unix-socket client."""
    if peer.startswith("unix:"):
        return "unix"
    return peer.rpartition(":")[0] or peer


class PerKeyRate:
    """True at most once per `period_s` per key; remembers a bounded number of keys."""

    def __init__(self, period_s: float, max_keys: int = 4096) -> None:
        self.period_s, self.max_keys = period_s, max_keys
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                return False
            self._last.pop(key, None)
            self._last[key] = now
            while len(self._last) > self.max_keys:  # the oldest entries go first
                del self._last[next(iter(self._last))]
            return True


def marker_peer_allowed(peer: str, markers_from: str) -> bool:
    """gRPC peer strings: "unix:PATH" (or "unix:"), "ipv4:127.0.0.1:PORT", "ipv6:[::1]:PORT"."""
    if markers_from == "any" or peer.startswith("unix:"):
        return True
    if markers_from == "socket":
        return False
    host = peer.partition(":")[2].rpartition(":")[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


class PowerDaemonService:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.streams = StreamSlots(daemon.config.max_streams)
        self._complaints = PerKeyRate(60.0)

    def GetInfo(self, data: bytes, context: grpc.ServicerContext) -> pb.NodeInfo:
        self._parse(pb.GetInfoRequest, data, context)
        return codec.node_info(self.daemon)

    def GetLatest(self, data: bytes, context: grpc.ServicerContext) -> pb.LatestReadings:
        self._parse(pb.GetLatestRequest, data, context)
        readings = [reading_pb(r.seq, r.sample.device, r.sample) for r in self.daemon.latest()]
        return pb.LatestReadings(info=codec.node_info(self.daemon), readings=readings)

    def SendMarkers(self, data: bytes, context: grpc.ServicerContext) -> pb.MarkerAck:
        if not marker_peer_allowed(context.peer(), self.daemon.config.markers_from):
            self._complain(context, "markers are taken from this node's own processes only "
                           f"(--markers-from {self.daemon.config.markers_from})",
                           grpc.StatusCode.PERMISSION_DENIED)  # fmt: skip
        request = self._parse(pb.MarkerBatch, data, context)
        markers = request.markers
        if len(markers) > MAX_MARKERS_PER_BATCH:
            self._complain(
                context, f"batch of {len(markers)} markers (at most {MAX_MARKERS_PER_BATCH})"
            )
        cfg = self.daemon.config
        now, skew = time.time_ns(), int(cfg.max_clock_skew_s * 1e9)
        for i, m in enumerate(markers):  # all or nothing: one bad marker refuses the batch
            if (size := m.ByteSize()) > MAX_MARKER_BYTES:
                reason = f"{size} bytes is oversized (at most {MAX_MARKER_BYTES})"
            elif cfg.require_run_token and not m.run_token:
                reason = "no run_token (this daemon requires one: --require-run-token)"
            else:
                reason = marker_problem(m, now, skew)
            if reason:
                self._complain(context, f"marker {i}: {reason}")
        next_seq, rejected = self.daemon.accept_markers(
            [marker_rec(m, at_intake=True) for m in markers],
            lambda seq, i, resolved: codec.encode_marker(markers[i], seq, resolved),
        )
        return pb.MarkerAck(accepted=len(markers) - rejected, next_seq=next_seq, rejected=rejected)

    def Subscribe(self, data: bytes, context: grpc.ServicerContext) -> Iterator:
        """Yields serialized StreamBatch bytes (see codec.py); the handler passes them through."""
        request = self._parse(pb.SubscribeRequest, data, context)
        daemon, buffer = self.daemon, self.daemon.buffer
        try:
            plan = daemon.plan_subscription(request.from_seq, request.boot_id)
        except SubscribeError as e:
            context.abort(grpc.StatusCode.OUT_OF_RANGE, str(e))
        release = self.streams.take(peer_host(context.peer()))
        if isinstance(release, str):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, release)
        try:
            # On RPC termination, whatever the reason: free the slot, wake the follower at once.
            if not context.add_callback(release) or not context.add_callback(buffer.wake):
                return
            yield from self._follow(request, context, plan)
        finally:
            release()

    def _parse(self, message_type, data: bytes, context: grpc.ServicerContext):
        """Requests arrive as raw bytes and are parsed here: an undecodable body is answered
        INVALID_ARGUMENT at the cost of one exception, with no traceback and nothing kept (a
        failing request_deserializer makes gRPC log a traceback and hold on to memory)."""
        try:
            return message_type.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as e:
            self._complain(
                context, f"undecodable {message_type.DESCRIPTOR.name} ({len(data)} bytes): {e}"
            )

    def _complain(self, context: grpc.ServicerContext, reason: str,
                  code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> None:  # fmt: skip
        """Refuse the request (INVALID_ARGUMENT unless told); log it at most once a minute per
        peer host."""
        self.daemon.invalid_requests_total += 1
        peer = context.peer()
        if self._complaints.allow(peer_host(peer)):  # per host, not per port
            log.warning("refused a request from %r: %r", context.peer(), reason)
        context.abort(code, reason)

    def _follow(
        self, request: pb.SubscribeRequest, context: grpc.ServicerContext, plan: StartPlan
    ) -> Iterator[bytes]:
        daemon, buffer = self.daemon, self.daemon.buffer
        max_batch = min(request.max_batch or daemon.config.default_batch, daemon.config.max_batch)
        linger_s = daemon.config.stream_linger_ms / 1000.0
        start, payloads = buffer.read(plan.start_seq, max_batch)
        # Anything evicted between planning and this first read is missed too.
        yield codec.batch_bytes(
            daemon.boot_id,
            start,
            payloads,
            missed=plan.missed + start - plan.start_seq,
            info=codec.node_info(daemon),
            boot_changed=plan.boot_changed,
            columnar=request.columnar,
        )
        cursor = start + len(payloads)
        while context.is_active():
            if len(payloads) < max_batch:  # caught up
                if request.no_follow:
                    return
                if not buffer.wait_beyond(cursor, _FOLLOW_POLL_S):
                    if buffer.closed:
                        return
                    continue
                if linger_s:  # returns early once a full batch is there (or on close)
                    buffer.wait_until(cursor + max_batch - 1, linger_s)
            start, payloads = buffer.read(cursor, max_batch)
            if start != cursor:
                # The ring overwrote what this follower had not sent yet. `missed` is only
                # reported at stream start, so end the stream; resubscribing reports the gap.
                context.abort(
                    grpc.StatusCode.DATA_LOSS,
                    f"subscriber fell behind: seqs {cursor}..{start - 1} were evicted; "
                    f"resubscribe from_seq={cursor} to learn how much was missed",
                )
            if payloads:
                yield codec.batch_bytes(daemon.boot_id, start, payloads, columnar=request.columnar)
                cursor = start + len(payloads)


def method_handlers(service: PowerDaemonService) -> dict[str, grpc.RpcMethodHandler]:
    """Like the generated add_PowerDaemonServicer_to_server, but every handler takes the raw
    request bytes (parsed by PowerDaemonService._parse) and Subscribe sends raw bytes."""
    return {
        "GetInfo": grpc.unary_unary_rpc_method_handler(
            service.GetInfo,
            request_deserializer=None,  # raw bytes: parsed in the handler
            response_serializer=pb.NodeInfo.SerializeToString,
        ),
        "GetLatest": grpc.unary_unary_rpc_method_handler(
            service.GetLatest,
            request_deserializer=None,
            response_serializer=pb.LatestReadings.SerializeToString,
        ),
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            service.Subscribe,
            request_deserializer=None,
            response_serializer=bytes,
        ),
        "SendMarkers": grpc.unary_unary_rpc_method_handler(
            service.SendMarkers,
            request_deserializer=None,
            response_serializer=pb.MarkerAck.SerializeToString,
        ),
    }
