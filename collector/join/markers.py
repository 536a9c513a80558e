"""Marker intake of the streaming join (pure core; part of Joiner, see join.py).

Start and end markers pair up per (run_id, rank, kind, epoch, step), whatever order they come
in. A marker whose interval is already computed is a re-send (ignored) if it is not later than
that interval's end; later, it is the same identity again: a rank resumed from a checkpoint
sends RUN_START .. RUN_END once more (and re-runs the epoch it was interrupted in). Such a new
session of an interval is joined like a first one (its markers wait while the previous
occurrence is still being computed); the store merges a run's sessions into one run interval
(store_intervals). A rank whose device the node's daemon does not measure gets no interval: its
markers are counted, not kept (they would wait forever).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from collector.join.state import DeviceState, JoinConfig, NodeState
from parawatt_proto.records import MarkerRec

log = logging.getLogger(__name__)

STAMP_BACK_NS = 200_000_000  # an end stamped this far before its start: the clock stepped


class MarkerIntake:
    """Joiner's marker side; Joiner.__init__ sets the state used here."""

    _nodes: dict[str, NodeState]
    _devices: dict[str, DeviceState]
    _done: dict[tuple, int]
    _progress: dict[str, list]
    _dropped: int
    _unmeasured: int
    _warned: dict[tuple[str, int], None]
    _open_overflow: int
    _logged: dict[str, float]  # what was last logged when (_minutely)
    _runs_forgotten: int
    cfg: JoinConfig
    _flush: Callable[[NodeState], None]  # Joiner's

    def add_markers(self, hostname: str, markers: Iterable[MarkerRec]) -> None:
        node = self._nodes.get(hostname)
        if node is None:
            node = self._nodes[hostname] = NodeState(hostname)
        if node.behind:  # readings waiting may hold a clock step: the era these markers are in
            self._flush(node)
        for m in markers:
            self._track(node, m)
            self._add(node, m)

    def _add(self, node: NodeState, m: MarkerRec) -> None:
        key = m.key
        done_end = self._done.get(key)
        if done_end is not None:
            if m.time_ns <= done_end:
                return  # a re-sent marker of an interval already computed
            del self._done[key]  # the same identity later: a new session
        p = node.pending.get(key)
        if p is not None and m in (p.start, p.end):
            return  # sent again while its interval is open
        if p is not None and p.start and p.end and m.time_ns > p.end.time_ns:
            node.deferred.setdefault(key, []).append(m)  # until this occurrence is computed
            return
        if p is None:
            if len(node.pending) >= self.cfg.max_open:
                self._overflow(node, m)
                return
            p = node.open(key)
        if m.device_slice:
            # A MIG slice has no power or energy of its own: the interval gets the whole GPU's,
            # shared with whatever runs on its other slices, and says so.
            p.flags.add("mig_shared")
        if m.kind.endswith("_start"):
            if p.start is not None and p.end is None and p.start.time_ns < m.time_ns:
                # Started again without an end: the earlier session died without its end
                # marker; what was integrated of it is dropped, and the interval says so.
                p.accs.clear()
                p.flags.add("restarted")
                self._dropped += 1
            p.start, p.era = m, node.era
            if key[2] == "run":
                node.new_runs[key] = None
        else:
            p.end = m
            node.ending[key] = None
        if p.start and p.end and p.end.time_ns < p.start.time_ns - STAMP_BACK_NS:
            # An end stamped before its start: the node's clock stepped back in between, maybe
            # before the readings show it (markers can come ahead of them). The stamps between
            # are ambiguous: intervals with a marker there are flagged (Joiner._ambiguous).
            node.clock_steps = [*node.clock_steps[-7:], (p.end.time_ns, p.start.time_ns)]
        if not p.devices:
            p.devices = self._devices_of(node, m)
            if not p.devices:
                node.close(key)
                self._no_device(node, m)

    def _overflow(self, node: NodeState, m: MarkerRec) -> None:
        """Open intervals are bounded (JoinConfig.max_open): past it a new one is refused,
        counted, and logged once a minute; the ones open already go on."""
        self._open_overflow += 1
        if self._minutely("overflow"):
            log.error(
                "%d intervals are open on %r (the join's limit): not opening one for run %r "
                "rank %d (%d refused so far)",
                len(node.pending), node.hostname, m.run_id, m.rank, self._open_overflow,
            )  # fmt: skip

    def _minutely(self, what: str) -> bool:
        """True at most once a minute per `what`: a log line a flood must not repeat."""
        now = time.monotonic()
        if now - self._logged.get(what, -60.0) < 60.0:
            return False
        self._logged[what] = now
        return True

    def _track(self, node: NodeState, m: MarkerRec) -> None:
        if m.run_id not in self._progress and len(self._progress) >= self.cfg.max_runs:
            del self._progress[next(iter(self._progress))]  # the oldest run's progress goes
            self._runs_forgotten += 1
        prog = self._progress.setdefault(m.run_id, [0, 0, False, 0])
        prog[0], prog[1] = max(prog[0], m.epoch), max(prog[1], m.step)
        if m.kind not in ("run_start", "run_end"):
            return
        if m.kind == "run_start" and m.time_ns > prog[3]:
            prog[2], prog[3] = False, m.time_ns  # (re)started: a resumed run is open again
        elif m.kind == "run_end" and m.time_ns >= prog[3]:
            prog[2] = True
        for uuid in self._devices_of(node, m):
            idle = node.devices[uuid].idle
            if m.kind == "run_start":
                idle.busy_start((m.run_id, m.rank), m.time_ns)
            else:
                idle.busy_end((m.run_id, m.rank), m.time_ns)

    def _devices_of(self, node: NodeState, m: MarkerRec) -> tuple[str, ...]:
        """The rank's GPU; plus the node's CPU/DRAM for a local-rank-0 rank's epochs and runs."""
        uuids = [m.device_uuid] if m.device_uuid in node.devices else []
        if m.local_rank == 0 and not m.kind.startswith("step"):
            uuids += [u for u, d in node.devices.items() if d.kind in ("cpu", "dram")]
        return tuple(uuids)

    def _no_device(self, node: NodeState, m: MarkerRec) -> None:
        self._unmeasured += 1
        if (m.run_id, m.rank) in self._warned:
            return
        self._warned[(m.run_id, m.rank)] = None
        if len(self._warned) > 1000:
            del self._warned[next(iter(self._warned))]
        log.warning(
            "run %r rank %d: device %r is not one %r's daemon measures; no energy for it",
            m.run_id, m.rank, m.device_uuid, node.hostname,
        )  # fmt: skip
