"""Boundary markers to the node's power daemon: a client that never slows or breaks training.

The one marker client of parawatt: `parawatt.track()` runs build on it, and so does the bundled
trainer (through `parawatt.track`).

`mark()` only appends a small tuple to a bounded deque (no protobuf, no lock, no syscall beyond
reading the clock); a full deque drops its oldest entry and the drop is counted. A background
thread wakes every `flush_interval_s`, turns queued tuples into one `MarkerBatch`, and sends it
with a deadline. A daemon that is down, slow or restarted only makes that thread retry with
capped backoff (the gRPC channel reconnects by itself); an INVALID_ARGUMENT answer (or any other
non-retriable status) is logged once and that batch is dropped, never retried. So a marker the
daemon would refuse must not leave here: a metric against its rules (a long or odd name, a value
that is no finite number, one too many) is dropped alone, with a warning at most once a minute,
and run ids and configs are checked up front (parawatt.run, parawatt.facts). Delivery is
at-least-once: a batch whose deadline passed may have arrived, and markers are idempotent by
(run_id, rank, kind, epoch, step) downstream. `close()` flushes with a bounded wait; whatever is
still unsent then counts as dropped.

Run ownership: every marker carries the run's secret token (`Marker.run_token`, made by rank 0 at
RUN_START and shared with the ranks); it is never logged, printed or part of a repr.

`STEP` is a client-side kind: one queued item for a whole step (its start stamp rides in the
config slot), expanded into STEP_START + STEP_END by the sender, so a step costs one append.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from time import time_ns

import grpc

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto import parawatt_pb2_grpc as pb_grpc
from parawatt_proto.limits import (
    MARKER_BYTES_MAX,
    METRICS_PER_MARKER,
)
from parawatt_proto.transport import ClientTLS, open_channel
from parawatt_proto.validate import metric_problem

log = logging.getLogger("parawatt.client")

RUN_START, RUN_END = pb.RUN_START, pb.RUN_END
EPOCH_START, EPOCH_END = pb.EPOCH_START, pb.EPOCH_END
STEP_START, STEP_END = pb.STEP_START, pb.STEP_END
STEP = -1  # client side only: STEP_START + STEP_END of one step in one queued item
STATUS = {
    "completed": pb.RUN_STATUS_COMPLETED,
    "failed": pb.RUN_STATUS_FAILED,
    "interrupted": pb.RUN_STATUS_INTERRUPTED,
}
_RETRIABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}
MAX_METRICS = METRICS_PER_MARKER  # per marker, the daemon's intake limit (parawatt_proto)
WARN_EVERY_S = 60.0  # a metric dropped again and again is logged at most this often
_CHANNEL_OPTIONS = [
    # Retry a restarted daemon within a second instead of gRPC's default (up to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(frozen=True)
class MarkerStats:
    enqueued: int
    sent: int
    dropped: int  # overflowed + rejected by the daemon + unsent at close
    rejected: int


class MarkerClient:
    def __init__(
        self,
        address: str,
        *,
        run_id: str,
        rank: int,
        local_rank: int,
        device_uuid: str = "",
        run_token: bytes = b"",
        tls: ClientTLS | None = None,
        max_queue: int = 100_000,
        max_batch: int = 1000,
        flush_interval_s: float = 0.05,
        deadline_s: float = 1.0,
        max_backoff_s: float = 1.0,
        resolve_time: Callable[[object], int] | None = None,
        thread_init: Callable[[], None] | None = None,
    ):
        self.address = address
        self._ident = (run_id, rank, local_rank, device_uuid, bytes(run_token))
        self._queue: deque = deque(maxlen=max_queue)
        self._max_batch, self._flush_s = max_batch, flush_interval_s
        self._deadline_s, self._max_backoff_s = deadline_s, max_backoff_s
        self._resolve, self._thread_init = resolve_time, thread_init
        self._last_stamp: tuple[object, int] = (None, 0)  # a step's start = the last one's end
        self._enqueued = self._taken = self._sent = self._rejected = self._unsent = 0
        self._stop = threading.Event()
        self._close_by = float("inf")
        self._warned: set = set()
        self._warned_at: dict[str, float] = {}
        self._channel = open_channel(address, tls, options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.PowerDaemonStub(self._channel)
        self._thread = threading.Thread(target=self._run, name="marker-sender", daemon=True)
        self._thread.start()

    # -- training thread -------------------------------------------------------------------
    def mark(self, kind: int, epoch: int = 0, step: int = 0, metrics=None, stamp=None) -> None:
        """Enqueue one boundary. `stamp`: time_ns, or a deferred stamp for `resolve_time`."""
        self._enqueued += 1
        self._queue.append(
            (kind, epoch, step, time_ns() if stamp is None else stamp, metrics, None, 0)
        )

    def mark_step(self, epoch: int, step: int, start, end, metrics=None) -> None:
        """One whole step: STEP_START at `start`, STEP_END at `end` (stamps as for `mark`)."""
        self._enqueued += 2
        self._queue.append((STEP, epoch, step, end, metrics, start, 0))

    def mark_run_start(self, config: Mapping[str, object], metrics=None) -> None:
        self._enqueued += 1
        self._queue.append((RUN_START, 0, 0, time_ns(), metrics, dict(config), 0))

    def mark_run_end(self, status: str, metrics=None, stamp=None) -> None:
        """Run markers carry epoch 0 and step 0, as the contract says."""
        stamp = time_ns() if stamp is None else stamp
        self._enqueued += 1
        self._queue.append((RUN_END, 0, 0, stamp, metrics, None, STATUS[status]))

    def stats(self) -> MarkerStats:
        overflow = self._enqueued - self._taken - self._queued()
        dropped = max(0, overflow) + self._rejected + self._unsent
        return MarkerStats(self._enqueued, self._sent, dropped, self._rejected)

    def _queued(self) -> int:
        return sum(2 if item[0] == STEP else 1 for item in list(self._queue))

    def close(self, timeout_s: float = 5.0) -> MarkerStats:
        """Flush what is queued, waiting at most `timeout_s`; idempotent."""
        if not self._stop.is_set():
            self._close_by = time.monotonic() + timeout_s
            self._stop.set()
            self._thread.join(timeout_s + self._deadline_s)
            self._channel.close()
        return self.stats()

    def __enter__(self) -> MarkerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- sender thread ---------------------------------------------------------------------
    def _run(self) -> None:
        if self._thread_init is not None:
            try:
                self._thread_init()
            except Exception as exc:  # e.g. CUDA gone: stamps fall back to the host clock
                self._warn_once("init", f"marker thread set-up failed: {exc}")
        pending: list = []
        backoff = 0.0
        while True:
            closing = self._stop.is_set()
            if closing and time.monotonic() >= self._close_by:
                break
            if not pending:
                pending = self._take()
            if not pending:
                if closing:
                    break
                self._stop.wait(self._flush_s)
                continue
            if self._send(pending):
                pending, backoff = [], 0.0
                continue
            if closing:
                break  # the daemon had its last chance; close() must not wait on a dead one
            backoff = min(self._max_backoff_s, backoff * 2 or 0.05)
            self._stop.wait(backoff)
        left = self._queued()
        self._unsent += len(pending) + left
        self._taken += left
        self._queue.clear()

    def _take(self) -> list:
        items = []
        queue = self._queue
        while queue and len(items) < self._max_batch:
            try:
                items.append(queue.popleft())
            except IndexError:  # raced with an overflow drop
                break
        markers = []
        for item in items:
            n = 2 if item[0] == STEP else 1
            self._taken += n
            try:
                if n == 2:
                    kind, epoch, step, end, metrics, start, _ = item
                    begin = self._to_proto((STEP_START, epoch, step, start, None, None, 0))
                    item = (STEP_END, epoch, step, end, metrics, None, 0)
                    markers += (begin, self._to_proto(item))
                else:
                    markers.append(self._to_proto(item))
            except Exception as exc:  # a bad payload must not kill the sender
                self._rejected += n
                self._warn_once("payload", f"dropped a marker that could not be encoded: {exc}")
        return markers

    def _time(self, stamp) -> int:
        """A stamp as time_ns: resolved once (a step's start is the previous step's end)."""
        if stamp.__class__ is int:
            return stamp
        last, ns = self._last_stamp
        if stamp is not last:
            ns = self._resolve(stamp) if self._resolve else time_ns()
            self._last_stamp = (stamp, ns)
        return ns

    def _to_proto(self, item) -> pb.Marker:
        kind, epoch, step, stamp, metrics, config, status = item
        run_id, rank, local_rank, uuid, token = self._ident
        stamp = self._time(stamp)
        marker = pb.Marker(
            run_id=run_id,
            rank=rank,
            kind=kind,
            epoch=epoch,
            step=step,
            time_ns=stamp,
            device_uuid=uuid,
            local_rank=local_rank,
            status=status,
            run_token=token,
        )
        if callable(metrics):  # filled in here, after every earlier stamp has been resolved
            metrics = metrics()
        if metrics and (dropped := _put_metrics(marker, metrics)):
            self._warn_every("metric", f"dropped {dropped}: the marker is sent without it")
        if config is not None:
            marker.config.CopyFrom(pb.RunConfig(**config))
            if (dropped := _fit(marker)) is not None:
                self._warn_every("size", dropped)
        return marker

    def _send(self, markers: list) -> bool:
        """True when the batch is done with (sent or dropped for good); False: retry later."""
        timeout = self._deadline_s
        if self._stop.is_set():
            timeout = max(0.05, min(timeout, self._close_by - time.monotonic()))
        try:
            ack = self._stub.SendMarkers(pb.MarkerBatch(markers=markers), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            if code in _RETRIABLE:
                self._warn_once(
                    "down",
                    f"daemon {self.address} not answering ({code.name}); "
                    "markers stay queued and training goes on",
                )
                return False
            self._rejected += len(markers)
            details = exc.details() if hasattr(exc, "details") else str(exc)
            self._warn_once(
                code,
                f"daemon {self.address} rejected {len(markers)} markers "
                f"({code.name}: {details}); dropping that batch",
            )
            return True
        refused = min(len(markers), getattr(ack, "rejected", 0))
        if refused:  # run ownership: another owner's run, or a finished one
            self._rejected += refused
            self._warn_once("owner", f"daemon {self.address} refused {refused} markers of this "
                                     "run (not its owner, or the run has finished)")  # fmt: skip
        self._sent += len(markers) - refused
        if "down" in self._warned:
            self._warned.discard("down")
            log.info("daemon %s reachable again; markers flowing", self.address)
        return True

    def _warn_once(self, key, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def _warn_every(self, key: str, message: str) -> None:
        """A bad metric comes back every step: one warning per WARN_EVERY_S, not one per step."""
        now = time.monotonic()
        if now - self._warned_at.get(key, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned_at[key] = now
            log.warning(message)


def _put_metrics(marker: pb.Marker, metrics: Mapping[str, object]) -> str | None:
    """The daemon refuses a whole batch (up to max_batch markers of every kind) for one bad
    marker, so keep to every rule it has for metrics (parawatt_proto.validate): a bad metric is
    dropped here, alone. -> what was dropped (for a warning), or None."""
    out = marker.metrics
    dropped = []
    for key, value in metrics.items():
        number, reason = _metric(key, value)
        if reason is None and len(out) >= MAX_METRICS:
            reason = f"metric {key[:40]!r}: more than {MAX_METRICS} metrics in one marker"
        if reason is None:
            out[key] = number
        else:
            dropped.append(reason)
    if not dropped:
        return None
    return dropped[0] + (f" (and {len(dropped) - 1} more)" if len(dropped) > 1 else "")


def _metric(key, value) -> tuple[float, str | None]:
    """(value as a float, None), or (0.0, why the daemon would refuse this metric)."""
    if not isinstance(key, str):
        return 0.0, f"metric {key!r}: its name is not a string"
    try:
        number = float(value)
    except Exception:  # a string, None, a tensor of many elements, an int beyond a float
        return 0.0, f"metric {key!r} is not a number ({type(value).__name__})"
    if reason := metric_problem(key, number):  # e.g. a diverged loss, a 200-character name
        return 0.0, reason
    return number, None


def _fit(marker: pb.Marker) -> str | None:
    """A RUN_START's config is checked against MARKER_BYTES_MAX up front (parawatt.facts), but
    its metrics come later: drop metrics until the marker fits. -> what was dropped, or None."""
    if marker.ByteSize() <= MARKER_BYTES_MAX:
        return None
    names = list(marker.metrics)
    while names and marker.ByteSize() > MARKER_BYTES_MAX:
        del marker.metrics[names.pop()]
    return f"dropped metrics of a run-start marker over {MARKER_BYTES_MAX} bytes"


class NullMarkerClient:
    """Markers off (`daemon="off"`, the trainer's `--daemon none`): the same interface."""

    address = None

    def mark(self, kind, epoch=0, step=0, metrics=None, stamp=None) -> None:
        pass

    def mark_step(self, epoch, step, start, end, metrics=None) -> None:
        pass

    def mark_run_start(self, config, metrics=None) -> None:
        pass

    def mark_run_end(self, status, metrics=None, stamp=None) -> None:
        pass

    def stats(self) -> MarkerStats:
        return MarkerStats(0, 0, 0, 0)

    def close(self, timeout_s: float = 5.0) -> MarkerStats:
        return self.stats()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass
