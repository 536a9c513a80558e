"""The writer thread: commits what the join produced, and survives the database going away.

A failed commit is rolled back as a whole and retried with backoff, merged with whatever arrived
meanwhile. The in-memory backlog is bounded: past `max_backlog_readings` the oldest raw readings
are dropped (counted, and recorded as "dropped" gaps); markers, intervals and cursors are small
and never dropped, so no interval is lost while the database is down.

At most `max_run_markers` RUN_START/RUN_END go into one commit (the rest wait for the next, the
cursors with them): a flood of run starts never holds up the readings. A SQLite file deleted or
replaced under the collector is noticed within `file_check_s` and created again at its path.
"""

from __future__ import annotations

import logging
import threading
import time

from collector.errors import StoreError
from collector.metrics.state import LiveState
from collector.store.store import Store
from collector.store.writebatch import GapRec, WriteBatch
from parawatt_proto.limits import DEFAULT_MAX_CLOCK_SKEW_S

log = logging.getLogger(__name__)

_LOG_ROWS = 10  # refused rows logged per batch; the rest are only counted
# Retention counts back from the newest reading (a replay of old readings keeps its own week),
# but never from beyond the collector's own clock by more than the skew a marker may have: one
# reading stamped a year ahead (a node's clock stepped wrong) had it delete every raw reading
_FUTURE_NS = round(DEFAULT_MAX_CLOCK_SKEW_S * 1e9)


class Writer:
    def __init__(
        self,
        store: Store,
        live: LiveState,
        flush_interval_s: float = 0.2,
        max_backlog_readings: int = 1_000_000,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        retention_s: float | None = None,
        retention_check_s: float = 60.0,
        max_run_markers: int = 5_000,
        file_check_s: float = 2.0,
    ) -> None:
        self.store, self.live = store, live
        self._flush_s = flush_interval_s
        self._max_backlog = max_backlog_readings
        self._backoff = backoff_s
        self._retention_ns = int(retention_s * 1e9) if retention_s else None
        self._retention_check_s = retention_check_s
        self._max_run_markers = max_run_markers
        self._file_check_s = file_check_s
        self._next_file_check = 0.0
        self._more = False  # run markers were deferred: the next commit follows at once
        self._current = WriteBatch()  # the batch being written (or retried)
        self._join_margin_s = 5.0
        self._cond = threading.Condition()
        self._backlog = WriteBatch()
        self._writing = False
        self.failures = 0  # consecutive failed commits
        self._stop = False
        self._newest_ns = 0
        self._isolated_logged = 0
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def start(self) -> Writer:
        self.store.check_file()  # the file the database is in now (SQLite)
        self._thread.start()
        return self

    def submit(self, batch: WriteBatch) -> None:
        latest = time.time_ns() + _FUTURE_NS
        for blocks in batch.readings.values():
            for block in blocks:
                if len(block):
                    newest = min(int(block.time_ns.max()), latest)
                    self._newest_ns = max(self._newest_ns, newest)
        with self._cond:
            self._backlog.extend(batch)
            self._bound()
            self._gauge()
            if self._backlog.reading_count >= self.store.chunk_rows:
                self._cond.notify()

    def behind(self, readings: int) -> bool:
        """More than `readings` wait while the database takes them (not while it fails): the
        join should wait, so a slow database slows the streams instead of filling memory."""
        waiting = self._backlog.reading_count + len(self._backlog.markers)  # a marker flood too
        return waiting > readings and self.failures == 0

    def idle(self) -> bool:
        with self._cond:
            return not self._backlog and not self._writing

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush everything (retrying for up to timeout_s if the database is down), then stop.
        A writer stuck in a commit past that is left behind, and what it held is logged."""
        with self._cond:
            self._stop = True
            self._deadline = time.monotonic() + timeout_s
            self._cond.notify()
        self._thread.join(timeout_s + self._join_margin_s)
        if self._thread.is_alive():
            with self._cond:
                left = WriteBatch()
                left.extend(self._current)
                left.extend(self._backlog)
            log.error("stopping without the last writes: %s did not take them within %.1f s. "
                      "%s", self.store.describe(), timeout_s + self._join_margin_s,
                      _unwritten(left))  # fmt: skip

    def _gauge(self) -> None:
        """parawatt_db_backlog_readings: the batch being written (or retried) too, not only
        what arrived meanwhile (called holding _cond)."""
        self.live.db_backlog_readings = self._backlog.reading_count + self._current.reading_count

    def _bound(self) -> None:
        for boot_id, first_seq, n in self._backlog.drop_oldest_readings(self._max_backlog):
            self.live.readings_dropped_total += n
            self._backlog.gaps.append(
                GapRec(boot_id, "dropped", "", first_seq, n, None, time.time_ns())
            )
            log.error("database backlog full: dropped %d readings of boot %r", n, boot_id)

    def _run(self) -> None:
        wait = self._backoff[0]
        next_trim = time.monotonic() + self._retention_check_s
        while True:
            with self._cond:
                if not self._stop and not self._more:
                    self._cond.wait(self._flush_s)
                self._more = False
                batch, self._backlog = self._backlog, WriteBatch()
                self._current = batch
                self._writing = bool(batch)
                stopping = self._stop
            if batch:
                if self._write(batch):
                    wait = self._backoff[0]
                    self.failures = 0
                else:
                    self.failures += 1
                    with self._cond:
                        batch.extend(self._backlog)
                        self._backlog = batch
                        self._current = WriteBatch()
                        self._bound()
                        self._gauge()
                        self._writing = False
                    if stopping and time.monotonic() > self._deadline:
                        log.error("giving up on the database: %s", _unwritten(batch))
                        return
                    time.sleep(min(wait, self._flush_s * 5) if stopping else wait)
                    wait = min(wait * 2, self._backoff[1])
                    continue
            with self._cond:
                self._writing = False
                self._current = WriteBatch()
                self._gauge()
                if stopping and not self._backlog:
                    return
            if self._retention_ns and time.monotonic() >= next_trim and self._newest_ns:
                next_trim = time.monotonic() + self._retention_check_s
                self._trim()

    def _write(self, batch: WriteBatch) -> bool:
        """Markers and intervals first, then readings in parts (markers arriving meanwhile go
        between them), then aggregates and cursors. A cursor is committed only after all the
        readings below it, and every part is idempotent, so on failure the whole batch is
        retried: what already went in is skipped by the unique keys."""
        started = time.perf_counter()
        if not self._file_ok():
            return False
        with self._cond:
            self._defer(batch)
        try:
            tail = WriteBatch(readings=batch.readings, aggregates=batch.aggregates,
                              cursors=batch.cursors, reading_count=batch.reading_count)  # fmt: skip
            meta = WriteBatch(nodes=batch.nodes, markers=batch.markers, intervals=batch.intervals,
                              rank_updates=batch.rank_updates, idle_updates=batch.idle_updates,
                              gaps=batch.gaps)  # fmt: skip
            if meta:
                self.store.write(meta)
            for part in tail.reading_parts(self.store.chunk_rows):
                self.store.write(part)
                self._write_urgent(batch)
            self.store.write(WriteBatch(aggregates=tail.aggregates, cursors=tail.cursors))
        except Exception as exc:
            with self.live.lock:
                self.live.db_errors_total += 1
            if _transient(exc):
                log.warning("%s (will retry; %d readings waiting)", exc, batch.reading_count)
                return False
            log.warning("the database refused a batch (%s); writing it in parts", _why(exc))
            self._isolated_logged = 0
            try:
                self._isolate(batch.items())
            except Exception as again:  # transient meanwhile: retried whole (idempotent)
                log.warning("%s (will retry; %d readings waiting)", again, batch.reading_count)
                return False
        with self.live.lock:
            self.live.db_write_seconds.observe(time.perf_counter() - started)
            self.live.readings_written_total += batch.reading_count
            self.live.markers_refused_total += self.store.take_refused()
        return True

    def _defer(self, batch: WriteBatch) -> None:
        """Run markers past max_run_markers (and the cursors) go back to the backlog's front,
        for the next commit: readings are written meanwhile. Called holding _cond."""
        rest = batch.defer_markers(self._max_run_markers)
        if rest:
            rest.extend(self._backlog)
            self._backlog = rest
            self._more = True

    def _file_ok(self) -> bool:
        """False while the SQLite file cannot be written (retried like an outage). Checked
        every file_check_s (one stat): a deleted file goes on taking writes, lost with it."""
        now = time.monotonic()
        if now < self._next_file_check:
            return True
        self._next_file_check = now + self._file_check_s
        what = self.store.check_file()
        if what is None:
            return True
        with self.live.lock:
            self.live.db_file_lost_total += 1
            self.live.db_errors_total += 1
        log.error("the database file %s was %s while the collector wrote to it: what was "
                  "written in the last %.0f s or so is lost with it. Writing at that path again "
                  "(a new, empty database if no file is there; restore a backup there to keep "
                  "the older data). Restart the collector to read again what the daemons' "
                  "buffers still hold (no read position is stored until then).",
                  self.store.describe(), what, self._file_check_s)  # fmt: skip
        try:
            self.store.reopen()
        except StoreError as exc:  # the directory gone, say: retried like a database down
            self._next_file_check = 0.0
            log.warning("%s (will retry)", exc)
            return False
        return True

    def _write_urgent(self, batch: WriteBatch) -> None:
        """Commit markers/intervals that arrived while a large batch is being written; they
        also join `batch`, so a later failure retries them with it."""
        with self._cond:
            meta = self._backlog.take_meta()
            self._defer(meta)
        if meta:
            batch.extend(meta)
            self.store.write(meta)

    def _isolate(self, items: list[tuple[str, object]]) -> None:
        """Write the items in halves, recursively, so that only the rows the database itself
        refuses (a data error, not a transient one) are dropped: counted and logged escaped,
        never taking other rows with them. A transient error propagates (retry the batch)."""
        if not items:
            return
        try:
            self.store.write(WriteBatch.of(items))
            return
        except Exception as exc:
            if _transient(exc):
                raise
            if len(items) == 1:
                kind, item = items[0]
                with self.live.lock:
                    self.live.rows_refused_total += 1
                    if kind == "readings":
                        self.live.readings_dropped_total += 1
                self._isolated_logged += 1
                if self._isolated_logged <= _LOG_ROWS:  # a broken schema refuses every row
                    log.error("dropped a %s row the database refuses (%s): %.300r",
                              kind.rstrip("s"), _why(exc), item)  # fmt: skip
                elif self._isolated_logged == _LOG_ROWS + 1:
                    log.error("dropping more refused rows of this batch (counted, not logged)")
                return
        half = len(items) // 2
        self._isolate(items[:half])
        self._isolate(items[half:])

    def _trim(self) -> None:
        try:
            n = self.store.trim_readings(self._newest_ns - self._retention_ns)
            if n:
                log.info("retention: deleted %d raw readings", n)
        except StoreError as exc:
            log.warning("retention trim failed: %s", exc)


def _transient(exc: BaseException) -> bool:
    """Retry the batch as it is: the connection is at fault (server gone or restarting, a lock,
    a full disk, even a role revoked: dropping rows would not mend it). False for a data error
    or a bug, which the same rows hit again: those rows are isolated."""
    return isinstance(exc, StoreError) and not exc.data


def _unwritten(batch: WriteBatch) -> str:
    return (f"{batch.reading_count} readings, {len(batch.markers)} markers and "
            f"{len(batch.intervals)} intervals are not written. The daemons' buffers still "
            f"hold them: the next start reads them again from the stored cursors, unless a "
            f"daemon's buffer wrapped meanwhile")  # fmt: skip


def _why(exc: BaseException) -> str:
    """First line, escaped (it may quote a row's values)."""
    text = str(exc).strip()
    line = text.splitlines()[0][:300] if text else type(exc).__name__
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
