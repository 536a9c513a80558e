"""The gRPC adapter: one subscriber thread per daemon, reconnecting with backoff.

A subscriber resumes from (boot_id, next_seq): at start-up the last cursor stored for that
daemon address, afterwards its own position. The daemon tells it what was lost (`missed`) and
whether it restarted (`boot_changed`); both travel on to the join and the database as gaps.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from collector.records import StreamChunk
from parawatt_proto import convert
from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto import parawatt_pb2_grpc as pb_grpc
from parawatt_proto.block import ReadingBlock
from parawatt_proto.transport import (
    AddressError,
    ClientTLS,
    TLSConfigError,
    open_channel,
    rpc_error_reason,
)

log = logging.getLogger(__name__)

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


@dataclass
class DaemonHealth:
    """Per daemon, read by the metrics at scrape time (plain attribute reads)."""

    address: str
    up: bool = False
    hostname: str = ""
    boot_id: str = ""
    last_reading_ns: int = 0
    readings_total: int = 0
    markers_total: int = 0
    missed_total: int = 0
    reconnects_total: int = 0
    boot_changes_total: int = 0
    last_error: str = ""


class MalformedBatch(Exception):
    """A stream message that breaks the contract (e.g. columns of different lengths): nothing of
    it is used, the stream is dropped and resumed from the last cursor."""


class Subscriber:
    def __init__(
        self,
        address: str,
        sink: Callable[[StreamChunk], bool],
        cursor: tuple[str, int] | None = None,
        max_batch: int = 500,
        backoff_s: tuple[float, float] = (0.2, 10.0),
        tls: ClientTLS | None = None,
    ) -> None:
        self.address = address
        self._tls = tls
        self.health = DaemonHealth(address)
        self._sink = sink  # returns False when the collector is stopping
        self.boot_id, self.next_seq = cursor if cursor else ("", 0)
        self._max_batch = max_batch
        self._backoff = backoff_s
        self._stop = threading.Event()
        self._call: grpc.Future | None = None
        self._thread = threading.Thread(target=self._run, name=f"ingest-{address}", daemon=True)

    def start(self) -> Subscriber:
        self._thread.start()
        return self

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        if self._thread.ident is not None:  # a takeover may be pending: never started
            self._thread.join(timeout_s)

    def _run(self) -> None:
        wait = self._backoff[0]
        while not self._stop.is_set():
            try:
                if self._stream_once():
                    wait = self._backoff[0]
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    break
                self._note_error(rpc_error_reason(self.address, exc, self._tls))
            except (TLSConfigError, AddressError) as exc:  # e.g. a certificate being replaced
                self._note_error(str(exc))
            except MalformedBatch as exc:
                self._note_error(f"malformed stream message: {exc}")
            except Exception as exc:  # a bug must not kill ingestion for good
                log.exception("ingest from %s failed", self.address)
                self._note_error(repr(exc))
            self.health.up = False
            if self._stop.wait(wait):
                break
            wait = min(wait * 2, self._backoff[1])
            self.health.reconnects_total += 1

    def _note_error(self, text: str) -> None:
        if text != self.health.last_error or self.health.up:
            log.warning("daemon %s: %r (reconnecting)", self.address, text)
        self.health.last_error = text

    def _stream_once(self) -> bool:
        """Follow one stream until it ends; True if it delivered anything."""
        with open_channel(self.address, self._tls, _CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.PowerDaemonStub(channel)
            request = pb.SubscribeRequest(
                from_seq=self.next_seq,
                boot_id=self.boot_id,
                max_batch=self._max_batch,
                columnar=True,
            )
            self._call = call = stub.Subscribe(request)
            if self._stop.is_set():
                call.cancel()
            uuids: dict[int, str] = {}
            hostname = ""
            got = False
            for batch in call:
                chunk, uuids, hostname = self._convert(batch, uuids, hostname)
                if not self._sink(chunk):
                    call.cancel()
                    return got
                got = True
                self.boot_id, self.next_seq = batch.boot_id, batch.next_seq
            return got

    def _convert(self, batch: pb.StreamBatch, uuids: dict[int, str], hostname: str):
        if reason := convert.boot_id_problem(batch.boot_id):
            raise MalformedBatch(reason)
        node = None
        previous = None
        h = self.health
        if batch.HasField("info"):
            node = convert.node_rec(batch.info)
            uuids = {d.index: d.uuid for d in node.devices}
            hostname = node.hostname
            if batch.boot_changed or (self.boot_id and self.boot_id != batch.boot_id):
                previous = self.boot_id or None
                h.boot_changes_total += 1
            h.up, h.hostname, h.boot_id, h.last_error = True, hostname, batch.boot_id, ""
            if batch.missed:
                log.warning("daemon %s: %d items lost before resuming", self.address, batch.missed)
        if batch.HasField("columns"):  # what this collector asks for
            try:
                n = convert.column_count(batch.columns)
            except ValueError as exc:
                raise MalformedBatch(str(exc)) from None
            decode = functools.partial(convert.reading_block, batch.columns, uuids)
            newest = max(batch.columns.time_ns) if n else 0
        else:  # a daemon that streams Reading messages
            n = len(batch.readings)
            decode = functools.partial(_rows_block, batch, uuids)
            newest = max(r.time_ns for r in batch.readings) if n else 0
        markers = [convert.marker_rec(m) for m in batch.markers]
        h.readings_total += n
        h.markers_total += len(markers)
        h.missed_total += batch.missed
        h.last_reading_ns = max(h.last_reading_ns, newest)
        chunk = StreamChunk(
            address=self.address,
            hostname=hostname,
            boot_id=batch.boot_id,
            first_seq=batch.first_seq,
            next_seq=batch.next_seq,
            readings=[],
            markers=markers,
            missed=batch.missed,
            boot_changed=previous is not None,
            previous_boot=previous,
            node=node,
            received_ns=time.time_ns(),
            decode=decode if n else None,
            pending=n,
        )
        return chunk, uuids, hostname


def _rows_block(batch: pb.StreamBatch, uuids: dict[int, str]) -> ReadingBlock:
    return ReadingBlock.from_rows(convert.readings(batch, uuids))
