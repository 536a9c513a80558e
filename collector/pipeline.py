"""The join thread: stream chunks in (from every subscriber), intervals and rows out.

One thread owns the Joiner and the aggregator, so the pure core needs no locks. Everything a
chunk and a poll produce goes to the writer as one WriteBatch, together with the cursor of the
stream it came from (the writer commits them in one transaction).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from collector.join.joiner import Joiner, JoinOutput
from collector.metrics.state import LiveState
from collector.ownership import OwnershipGate
from collector.records import StreamChunk, shares_device
from collector.store.aggregate import SecondAggregator
from collector.store.writebatch import GapRec, WriteBatch
from collector.store.writer import Writer
from parawatt_proto.block import ReadingBlock
from parawatt_proto.records import NodeRec

log = logging.getLogger(__name__)

_PROGRESS_EVERY_NS = 1_000_000_000


class JoinTask:
    """Work that must run in the join thread in stream order: taking over a daemon's node
    (before its first chunk) or letting it go (after its last)."""

    weight = 1

    def __init__(self, fn: Callable[[WriteBatch], None]) -> None:
        self.fn = fn


class ChunkQueue:
    """A FIFO bounded both in messages and in the readings and markers they hold: what a
    stream may buffer ahead of the join is memory, whatever the daemons' batch sizes (a flood
    of marker-only messages or of 2,000-reading ones alike). One chunk always fits."""

    def __init__(self, max_chunks: int, max_items: int) -> None:
        self._items: deque[tuple[StreamChunk | JoinTask, int]] = deque()
        self._weight = 0
        self._max_chunks, self._max_items = max_chunks, max_items
        self._cond = threading.Condition()

    def put(self, chunk: StreamChunk | JoinTask, timeout_s: float) -> bool:
        w = chunk.weight
        with self._cond:
            if self._full(w) and not self._cond.wait_for(lambda: not self._full(w), timeout_s):
                return False
            self._items.append((chunk, w))
            self._weight += w
            self._cond.notify_all()
            return True

    def _full(self, w: int) -> bool:
        return bool(self._items) and (
            len(self._items) >= self._max_chunks or self._weight + w > self._max_items
        )

    def get(self, timeout_s: float | None = None) -> StreamChunk | JoinTask | None:
        """The oldest chunk; None if none comes within timeout_s (0: do not wait)."""
        with self._cond:
            if not self._items and (not timeout_s or not self._cond.wait(timeout_s)):
                return None
            if not self._items:
                return None
            chunk, w = self._items.popleft()
            self._weight -= w
            self._cond.notify_all()
            return chunk

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    @property
    def items(self) -> int:
        return self._weight


class Pipeline:
    def __init__(
        self,
        joiner: Joiner,
        aggregator: SecondAggregator,
        live: LiveState,
        writer: Writer,
        max_queue: int = 2000,
        poll_interval_s: float = 0.1,
        run_grace_s: float = 300.0,
        max_items: int = 100_000,
        max_unwritten: int = 100_000,
        gate: OwnershipGate | None = None,
    ) -> None:
        self.joiner, self.aggregator, self.live, self.writer = joiner, aggregator, live, writer
        self.gate = gate  # run ownership: refused markers never reach the join or the database
        self.queue = ChunkQueue(max_queue, max_items)
        self._max_unwritten = max_unwritten
        self._poll_interval_s = poll_interval_s
        self._hand_on_s = 0.25
        self._blocks: list[ReadingBlock] = []  # readings not yet aggregated (_fold)
        # Called in the join thread with a node the join has not seen before it takes it (the
        # service loads its devices' idle history: a daemon back on a new address is a node
        # no rebuild restored)
        self.on_new_node: Callable[[NodeRec], None] | None = None
        self._grace_ns = int(run_grace_s * 1e9)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="join", daemon=True)
        self._run_energy_done: dict[str, float] = {}  # run_id -> J of its emitted run intervals
        # run_id -> device -> (rank, start, end) of its run intervals counted
        self._run_devices: dict[str, dict[str, list[tuple[int, int, int]]]] = {}
        self._progress_ns = 0
        self.idle = threading.Event()  # set while the queue is empty and all output handed on

    def start(self) -> Pipeline:
        self._thread.start()
        return self

    def put(self, chunk: StreamChunk | JoinTask) -> bool:
        """Called by subscriber threads; blocks while the join is behind (back-pressure on the
        gRPC stream, the daemon's ring buffer holds the rest). False once stopping."""
        while not self._stop.is_set():
            if self.queue.put(chunk, timeout_s=0.5):
                self.idle.clear()
                return True
        return False

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop after draining what is queued (call after the subscribers are closed)."""
        self._stop.set()
        if self._thread.ident is not None:  # never started: start-up failed before start()
            self._thread.join(timeout_s)

    def _run(self) -> None:
        last_poll = 0.0
        while True:
            batch = WriteBatch()
            chunk = self.queue.get(self._poll_interval_s)
            if chunk is None and self._stop.is_set():
                self._hand_on(batch, final=True)
                return
            try:
                handed_on, n = time.monotonic(), 0
                while chunk is not None:
                    self._process(chunk, batch)
                    n += 1
                    if n % 50 == 0 and time.monotonic() - handed_on >= self._hand_on_s:
                        break  # hand on regularly even under full load (marker latency)
                    chunk = self.queue.get(0)
                now = time.monotonic()
                if now - last_poll >= self._poll_interval_s or self.queue.empty():
                    self._poll(batch)
                    last_poll = now
            except Exception:  # a bug in one chunk must not stop ingestion
                log.exception("join failed on a stream chunk; continuing")
            self._hand_on(batch)

    def _fold(self, batch: WriteBatch) -> None:
        """The per-second aggregates and the newest reading per device, of every message since
        the last hand-on at once (a message often holds one reading per device: per-device
        work per message would cost more than the readings)."""
        if self._blocks:
            block = ReadingBlock.concat(self._blocks)
            self._blocks = []
            batch.aggregates.extend(self.aggregator.add(block))
            self.live.add_readings(block)

    def _hand_on(self, batch: WriteBatch, final: bool = False) -> None:
        self._fold(batch)
        if final:
            self._poll(batch)
        if batch:
            self.writer.submit(batch)
        while self.writer.behind(self._max_unwritten) and not self._stop.is_set():
            time.sleep(0.005)  # back-pressure: the queue fills, then the streams wait
        if self.queue.empty():
            self.idle.set()

    def call(self, fn: Callable[[WriteBatch], None]) -> bool:
        """Run fn(batch) in the join thread after every chunk queued so far."""
        return self.put(JoinTask(fn))

    def _process(self, c: StreamChunk | JoinTask, batch: WriteBatch) -> None:
        if isinstance(c, JoinTask):
            self._fold(batch)  # what came before the task is the state it acts on
            c.fn(batch)
            return
        if c.node is not None:
            new = not self.joiner.knows_node(c.node.hostname)
            self.joiner.add_node(c.node)
            if new and self.on_new_node is not None:
                self.on_new_node(c.node)
            self.live.add_node(c.node)
            batch.nodes[c.boot_id] = c.node
        if c.missed:
            batch.gaps.append(
                GapRec(
                    c.boot_id,
                    "missed",
                    c.address,
                    c.first_seq - c.missed,
                    c.missed,
                    None,
                    c.received_ns,
                )
            )
        if c.boot_changed:
            batch.gaps.append(
                GapRec(
                    c.boot_id,
                    "boot_changed",
                    c.address,
                    c.first_seq,
                    0,
                    c.previous_boot,
                    c.received_ns,
                )
            )
        readings = c.take_readings()
        if len(readings):
            batch.add_readings(c.boot_id, readings)  # stored as they came
        markers = self.gate.filter(c.markers) if self.gate and c.markers else c.markers
        if markers:
            batch.markers.extend((c.boot_id, m) for m in markers)
            for m in markers:
                if m.kind == "run_start" and m.config is not None:
                    cfg = m.config
                    self.live.add_run_facts(m.run_id, cfg.tags.get("sweep", ""), cfg.model,
                                            cfg.nodes)  # fmt: skip
        # in the stream's order: a marker goes with the readings before it (Joiner.add_in_order)
        self._blocks += self.joiner.add_in_order(c.hostname, readings, markers)
        batch.cursors[c.boot_id] = (c.address, c.next_seq, c.received_ns)

    def _poll(self, batch: WriteBatch) -> None:
        out = self.joiner.poll()
        self.apply(out, batch)
        now_ns = time.time_ns()
        if now_ns - self._progress_ns >= _PROGRESS_EVERY_NS:
            self._progress_ns = now_ns
            self._update_runs(now_ns)

    def apply(self, out: JoinOutput, batch: WriteBatch) -> None:
        batch.intervals.extend(out.intervals)
        batch.rank_updates.extend(out.rank_updates)
        batch.idle_updates.extend(out.idle_updates)
        for i in out.intervals:
            if i.kind == "run" and i.energy_j is not None and self._first_run_device(i):
                self._run_energy_done[i.run_id] = (
                    self._run_energy_done.get(i.run_id, 0.0) + i.energy_j
                )
                while len(self._run_energy_done) > self.joiner.cfg.max_runs:  # bounded
                    del self._run_energy_done[next(iter(self._run_energy_done))]
                self.live.add_run_energy(i.run_id, i.energy_j, i.device_uuid)
        self.live.add_intervals(out.intervals)
        if (out.idle_updates or out.dropped_markers or out.unmeasured_markers
                or out.open_overflow or out.readings_ahead or out.readings_late
                or out.clock_steps):  # fmt: skip
            with self.live.lock:
                for u in out.idle_updates:
                    self.live.idle_w[u.device_uuid] = u.idle_power_w
                self.live.unpaired_markers_total += out.dropped_markers
                self.live.unmeasured_markers_total += out.unmeasured_markers
                self.live.open_overflow_total += out.open_overflow
                self.live.readings_ahead_total += out.readings_ahead
                self.live.readings_late_total += out.readings_late
                self.live.clock_steps_total += out.clock_steps

    def _first_run_device(self, i) -> bool:
        """False for a run interval of a device that another rank's run interval of the run
        already counted at the same time: ranks sharing a GPU each measure all of it, and the
        run counts it once (as store.queries does). The same rank's next session, or another
        rank on that device at another time (a run resumed on other GPUs), still adds its own.
        Bounded with the runs it follows, and to 64 intervals a device."""
        owner = self._run_devices.setdefault(i.run_id, {})
        while len(self._run_devices) > self.joiner.cfg.max_runs:
            del self._run_devices[next(iter(self._run_devices))]
        counted = owner.setdefault(i.device_uuid, [])
        if shares_device(counted, i.rank, i.start_ns, i.end_ns):
            return False
        counted[:] = [*counted[-63:], (i.rank, i.start_ns, i.end_ns)]
        return True

    def _update_runs(self, now_ns: int) -> None:
        open_runs = {k[0] for k in self.joiner.pending_keys() if k[2] == "run"}
        for p in self.joiner.progress(self.live.shown_runs()):
            energy = self._run_energy_done.get(p.run_id, 0.0) + p.energy_j
            self.live.update_run(p.run_id, p.epoch, p.step, energy, p.ended, p.session_start_ns)
            if p.ended and p.run_id not in open_runs:
                self.live.end_run(p.run_id, now_ns, energy)
        gone = self.live.expire_runs(now_ns, self._grace_ns)
        self.joiner.forget_runs(set(gone))
        for run_id in gone:
            self._run_energy_done.pop(run_id, None)
            self._run_devices.pop(run_id, None)
