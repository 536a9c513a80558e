"""What /metrics shows, kept up to date by the join and the writer (read at scrape time).

Labels stay bounded: node and device (a fixed set), daemon address, and run_id only while a run
is active plus a grace period (then its series disappear), for at most max_run_series runs at
once. A run silent for `silent_s` (no marker, no progress: a job killed with SIGKILL never ends)
loses its series too, so dead runs cannot hold every slot for good; it gets them back when it
moves again. Never step or epoch labels.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field

from collector.records import IntervalRec
from parawatt_proto.block import ReadingBlock, as_block
from parawatt_proto.records import NodeRec, ReadingRec

STEP_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STEP_JOULES_BUCKETS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)
log = logging.getLogger(__name__)

_OVERFLOW_BITS = 1 << 23  # 1 MiB: counting refused runs once each


def _overflow_bit(run_id: str) -> tuple[int, int]:
    """(byte, mask) of the run's bit in LiveState's set of runs refused a series long ago."""
    bit = int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=8).digest()) % _OVERFLOW_BITS
    return bit >> 3, 1 << (bit & 7)


DB_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Fixed buckets, cumulative at export (what HistogramMetricFamily wants)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for le, n in zip([*map(str, self.buckets), "+Inf"], self.counts, strict=True):
            total += n
            out.append((le, total))
        return out


@dataclass
class RunLive:
    run_id: str
    epoch: int = 0
    step: int = 0
    # Completed run intervals (rank sessions) only: the figure SQL stores, so it never shrinks.
    energy_final_j: float = 0.0
    # Completed plus the open sessions' energy so far: a live estimate that may go down a little
    # once the final figures replace it (a gauge, never fed to the counter).
    energy_estimate_j: float = 0.0
    sweep: str = ""
    model: str = ""
    nodes: int = 0
    node_energy_j: dict[str, float] = field(default_factory=dict)  # the final figure per node
    ended_ns: int | None = None  # collector clock when the run was seen to end
    session_start_ns: int = 0  # its latest RUN_START (a resumed run starts again)
    moved_ns: int = 0  # collector clock when it was last seen to move (marker, step, end)
    step_seconds: Histogram = field(default_factory=lambda: Histogram(STEP_SECONDS_BUCKETS))
    step_joules: Histogram = field(default_factory=lambda: Histogram(STEP_JOULES_BUCKETS))


@dataclass(frozen=True)
class DeviceLabels:
    node: str
    device: str
    kind: str
    name: str


class LiveState:
    def __init__(self, max_run_series: int = 1000, run_silent_s: float = 3600.0) -> None:
        self.lock = threading.Lock()
        self.max_run_series = max_run_series
        self.silent_ns = int(run_silent_s * 1e9)
        self.devices: dict[str, DeviceLabels] = {}
        self.latest: dict[str, ReadingRec] = {}
        self.idle_w: dict[str, float] = {}
        self.runs: dict[str, RunLive] = {}
        self.intervals_total: dict[str, int] = {"step": 0, "epoch": 0, "run": 0}
        self.unpaired_markers_total = 0
        self.unmeasured_markers_total = 0
        self.open_overflow_total = 0  # markers refused: too many open intervals in the join
        self.readings_ahead_total = 0  # readings the join set aside: stamped too far ahead
        self.readings_late_total = 0  # ... behind newer ones with an older counter
        self.clock_steps_total = 0  # backward steps of a node's clock the join saw
        self.runs_overflow_total = 0  # runs given no series: max_run_series were live
        self.rows_refused_total = 0  # rows the database refused, dropped alone (writer)
        self.markers_refused_total = 0  # run ownership: another owner's run, or a finished one
        self.readings_dropped_total = 0
        self.db_errors_total = 0
        self.db_file_lost_total = 0  # the SQLite file deleted or replaced under the writer
        self.db_backlog_readings = 0
        self.db_write_seconds = Histogram(DB_SECONDS_BUCKETS)
        self.readings_written_total = 0
        self.daemons: list = []  # ingest.DaemonHealth, one per daemon
        # runs whose series are gone -> their latest RUN_START then (insertion-ordered)
        self._expired: dict[str, int] = {}
        # runs refused a series, to count each once: the latest exactly, the ones evicted from
        # there as bits of a hash set (a collision may leave a new run uncounted, never
        # counts one twice)
        self._overflowed: dict[str, None] = {}
        self._overflowed_bits = bytearray(_OVERFLOW_BITS // 8)
        # runs whose series went for silence -> (epoch, step, session start) then
        self._silenced: dict[str, tuple[int, int, int]] = {}
        self._overflow_logged = -60.0

    def add_node(self, node: NodeRec) -> None:
        with self.lock:
            for d in node.devices:
                self.devices[d.uuid] = DeviceLabels(node.hostname, d.uuid, d.kind, d.name)

    def forget_devices(self, uuids: list[str]) -> None:
        """Devices another collector reads now: their series leave this /metrics."""
        with self.lock:
            for uuid in uuids:
                self.devices.pop(uuid, None)
                self.latest.pop(uuid, None)
                self.idle_w.pop(uuid, None)

    def add_readings(self, readings: ReadingBlock | list[ReadingRec]) -> None:
        """The newest reading of each device (a record each: a few per stream message)."""
        block = as_block(readings)
        latest = self.latest
        for uuid, i in block.last_per_device(~block.lost).items():
            latest[uuid] = block.row(i)  # dict stores are atomic under the GIL: no lock here

    def add_intervals(self, intervals: list[IntervalRec]) -> None:
        with self.lock:
            for i in intervals:
                self.intervals_total[i.kind] = self.intervals_total.get(i.kind, 0) + 1
                if i.kind != "step":
                    continue
                run = None if i.run_id in self._silenced else self._run(i.run_id)
                if run is not None:
                    run.moved_ns = time.time_ns()
                    run.step_seconds.observe(i.duration_s)
                    if i.energy_j is not None:
                        run.step_joules.observe(i.energy_j)

    def _run(self, run_id: str) -> RunLive | None:
        """The run's live record (created on first sight), None once it has expired, or when
        max_run_series runs are live already (counted once per run, logged once a minute):
        /metrics stays bounded however many runs a daemon is sent."""
        if run_id in self._expired:
            return None
        run = self.runs.get(run_id)
        if run is None:
            if len(self.runs) >= self.max_run_series:
                if self._first_refusal(run_id):
                    self.runs_overflow_total += 1
                    now = time.monotonic()
                    if now - self._overflow_logged >= 60.0:
                        self._overflow_logged = now
                        log.warning(
                            "%d runs are live on /metrics (the limit): no series for run %r "
                            "(%d runs without series so far; SQL has them all)",
                            len(self.runs), run_id, self.runs_overflow_total,
                        )  # fmt: skip
                return None
            run = self.runs[run_id] = RunLive(run_id, moved_ns=time.time_ns())
        return run

    def _first_refusal(self, run_id: str) -> bool:
        """True the first time this run is refused a series, never again (bounded memory)."""
        if run_id in self._overflowed:
            return False
        byte, mask = _overflow_bit(run_id)
        if self._overflowed_bits[byte] & mask:
            return False  # refused before (or a collision: not counted rather than twice)
        self._overflowed[run_id] = None
        if len(self._overflowed) > 10_000:
            old = next(iter(self._overflowed))
            del self._overflowed[old]
            byte, mask = _overflow_bit(old)
            self._overflowed_bits[byte] |= mask
        return True

    def shown_runs(self) -> set[str] | None:
        """The runs with series when no more can be added (None while there is room)."""
        with self.lock:
            return set(self.runs) if len(self.runs) >= self.max_run_series else None

    def update_run(
        self,
        run_id: str,
        epoch: int,
        step: int,
        energy_j: float,
        ended: bool = False,
        session_start_ns: int = 0,
    ) -> None:
        """Progress of an open run; a run that ended and starts again (resumed from a
        checkpoint: a later RUN_START) is open again, and comes back if its series had gone."""
        with self.lock:
            if session_start_ns > self._expired.get(run_id, session_start_ns):
                del self._expired[run_id]
            silenced = self._silenced.get(run_id)
            if silenced is not None:
                if silenced == (epoch, step, session_start_ns) and not ended:
                    return  # still silent: no series
                del self._silenced[run_id]  # it moves again: its series come back
            if (run := self._run(run_id)) is None:
                return
            if (run.epoch, run.step, run.session_start_ns) != (epoch, step, session_start_ns):
                run.moved_ns = time.time_ns()
            run.epoch, run.step = epoch, step
            run.energy_estimate_j = energy_j
            run.session_start_ns = max(run.session_start_ns, session_start_ns)
            if not ended:
                run.ended_ns = None

    def end_run(self, run_id: str, now_ns: int, energy_j: float | None) -> None:
        with self.lock:
            if (run := self._run(run_id)) is None:
                return
            if run.ended_ns is None:
                run.ended_ns = run.moved_ns = now_ns
            if energy_j is not None:
                run.energy_estimate_j = energy_j

    def add_run_energy(self, run_id: str, energy_j: float, device_uuid: str = "") -> None:
        """A rank's run interval is complete: its energy is final (as stored in SQL)."""
        with self.lock:
            if (run := self._run(run_id)) is not None:
                run.energy_final_j += energy_j
                dev = self.devices.get(device_uuid)
                node = dev.node if dev is not None else ""
                run.node_energy_j[node] = run.node_energy_j.get(node, 0.0) + energy_j
                run.energy_estimate_j = max(run.energy_estimate_j, run.energy_final_j)

    def add_run_facts(self, run_id: str, sweep: str, model: str, nodes: int) -> None:
        """Labels of the run's series from its RUN_START configuration (bounded like run_id:
        they live and expire with it)."""
        with self.lock:
            if (run := self._run(run_id)) is not None:
                run.sweep, run.model, run.nodes = sweep, model, nodes

    def expire_runs(self, now_ns: int, grace_ns: int) -> list[str]:
        """Drop the series of runs that ended over grace_ns ago (returned: the join forgets
        them) and of open runs silent for silent_ns (not returned: the join keeps what it
        needs to finish them, and their series come back if they move again)."""
        with self.lock:
            gone = [
                r for r, v in self.runs.items() if v.ended_ns and now_ns - v.ended_ns > grace_ns
            ]
            for run_id in gone:
                self._expired[run_id] = self.runs.pop(run_id).session_start_ns
            while len(self._expired) > 10_000:
                del self._expired[next(iter(self._expired))]
            silent = [r for r, v in self.runs.items()
                      if not v.ended_ns and now_ns - v.moved_ns > self.silent_ns]  # fmt: skip
            for run_id in silent:
                v = self.runs.pop(run_id)
                self._silenced[run_id] = (v.epoch, v.step, v.session_start_ns)
            while len(self._silenced) > 100_000:
                del self._silenced[next(iter(self._silenced))]
            if silent:
                log.info("%d runs silent for %.0f s lost their series on /metrics (killed "
                         "without their end?); SQL keeps them", len(silent),
                         self.silent_ns / 1e9)  # fmt: skip
            return gone
