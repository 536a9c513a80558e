"""The streaming join of markers with readings into step/epoch/run intervals (pure core).

Per node a watermark (the newest reading time) tells how far readings have come. Start and end
markers pair up per (run_id, rank, kind, epoch, step) whatever order they arrive in. An interval
is computed once its device's energy is settled past its end (readings a counter update or two
beyond it); if a device lags, it is computed anyway when the node's watermark is `late_bound`
past the end, with what is there, and flagged "late".
Long open intervals are integrated in pieces (accumulators) so readings need not stay in memory
for a whole run, but only up to keep_ns behind the watermark: an end marker up to keep_ns late
still finds the readings around it (later than that, the interval gets no energy and says so).
Energies come from collector.energy.timeline (counter-anchored, power-shaped).

Markers come in through markers.py (pairing, sessions of a resumed run); readings out of their
stream's order and a node clock that steps are order.py's.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Sequence

import numpy as np

from collector.energy.timeline import CounterSpec, IntervalEnergy
from collector.join.accum import Accumulator, shared_piece
from collector.join.idle import IDLE_COLUMNS
from collector.join.markers import MarkerIntake
from collector.join.order import BEHIND_NS, StreamOrder
from collector.join.state import (
    BUFFER_SAMPLES,
    DeviceState,
    JoinConfig,
    JoinOutput,
    NodeState,
    Pending,
    RunProgress,
    interval_record,
)
from collector.records import IdleUpdate, RankUpdate
from parawatt_proto.block import FLOAT_INDEX, ReadingBlock, as_block
from parawatt_proto.records import DeviceRec, MarkerRec, NodeRec, ReadingRec

_POWER, _ENERGY = FLOAT_INDEX["power_w"], FLOAT_INDEX["energy_j"]
_IDLE = [FLOAT_INDEX[name] for name in IDLE_COLUMNS]

log = logging.getLogger(__name__)

__all__ = ["JoinConfig", "JoinOutput", "Joiner", "RunProgress"]

_KIND_ORDER = {"step": 0, "epoch": 1, "run": 2}  # a rank's run interval is emitted last
_RECENT_KEYS = 100_000
# Share of each 100 ms window a partial-coverage sensor observes: ~25 ms (Yang et al., SC24
# "Part-time Power Measurements", A100/H100). The daemon says whether a device is one.
PARTIAL_COVERAGE_FRACTION = 0.25
MAX_LAG_S = 0.5  # an instant-power lag beyond this is a mismeasurement: ignored
AHEAD_CONFIRM = 3  # blocks in a row wholly too far ahead before the join follows them


def device_spec(d: DeviceRec) -> CounterSpec:
    """What energy attribution needs to know of a device's sensors (DeviceRec: the daemon's
    measured figures where it could measure them)."""
    lag = d.instant_power_lag_s
    return CounterSpec(
        update_s=d.counter_update_s or 0.1,
        resolution_j=d.counter_resolution_j or 0.001,
        # power_w is the driver's average where there is no instantaneous power
        power_avg_s=0.0
        if d.has_instant_power or d.power_avg_window_s == 0
        else (d.power_avg_window_s or 1.0),
        avg_window_s=d.power_avg_window_s or 1.0,
        instant_power_lag_s=lag if lag is not None and 0.0 <= lag <= MAX_LAG_S else 0.0,
        coverage_fraction=PARTIAL_COVERAGE_FRACTION if d.partial_coverage else 1.0,
    )


class Joiner(MarkerIntake, StreamOrder):
    def __init__(self, cfg: JoinConfig | None = None) -> None:
        self.cfg = cfg or JoinConfig()
        self._nodes: dict[str, NodeState] = {}
        self._devices: dict[str, DeviceState] = {}
        # Per (run, rank, uuid): the idle power of the rank's current session, measured at the
        # session's start (_facts_at: (run, rank) -> that start).
        self._run_idle: dict[tuple[str, int, str], float | None] = {}
        self._facts_at: dict[tuple[str, int], int] = {}
        self._done: dict[tuple, int] = {}  # key -> end_ns of its computed interval
        self._done_order: deque[tuple] = deque()
        self._progress: dict[str, list] = {}  # run_id -> [epoch, step, ended, session start]
        self._dropped = 0  # unpaired markers found while adding markers (reported by poll)
        self._unmeasured = 0  # markers of ranks on no device this node measures
        self._warned: dict[tuple[str, int], None] = {}
        self._open_overflow = 0  # markers refused: too many open intervals (JoinConfig.max_open)
        self._logged: dict[str, float] = {}
        self._runs_forgotten = 0
        self._ahead = 0  # readings set aside since the last poll (JoinOutput.readings_ahead)
        self._late = 0  # readings set aside as late (JoinOutput.readings_late)
        self._clock_steps = 0  # backward steps of a node's clock (JoinOutput.clock_steps)

    # -- input -------------------------------------------------------------------------------
    def add_node(self, node: NodeRec) -> None:
        """A node's devices; a device already known takes the sensor facts of the newest
        NodeRec (a daemon measures them at every start; the database's copy may lack some)."""
        n = self._nodes.setdefault(node.hostname, NodeState(node.hostname))
        self._flush(n)
        for d in node.devices:
            spec = device_spec(d)
            if (dev := n.devices.get(d.uuid)) is not None:
                if node.boot_id:  # a live daemon's word, not the database's
                    dev.set_spec(spec)
                continue
            dev = DeviceState(node.hostname, d.uuid, d.kind, spec, self.cfg)
            n.devices[d.uuid] = self._devices[d.uuid] = dev

    def set_idle(self, uuid: str, idle_power_w: float, measured_ns: int) -> None:
        """A device's last idle measurement, e.g. from the database after a restart."""
        if (dev := self._devices.get(uuid)) is not None:
            dev.idle.idle_power_w, dev.idle.measured_ns = idle_power_w, measured_ns

    def load_idle_history(self, uuid: str, buckets) -> None:
        """A device's idle history from the database (IdleBucket records)."""
        if (dev := self._devices.get(uuid)) is not None:
            dev.idle.load(list(buckets))

    def set_run_idle(
        self, run_id: str, rank: int, uuid: str, idle_power_w: float | None, start_ns: int
    ) -> None:
        """The idle power measured for the rank's session that started at start_ns."""
        self._run_idle[(run_id, rank, uuid)] = idle_power_w
        self._facts_at[(run_id, rank)] = start_ns

    def add_readings(
        self, hostname: str, readings: ReadingBlock | Sequence[ReadingRec]
    ) -> ReadingBlock:
        """Hot path (~50,000 readings/s, often one reading per device per message): the block
        waits at its node, and is shared out to the devices in one pass per poll (_flush),
        so the per-device Python work is per poll, not per message. Returns the readings
        less those set aside as stamped too far ahead (_not_ahead): what the per-second
        aggregation and the live gauges take too (one stray stamp would close their seconds
        for as long)."""
        node = self._nodes.get(hostname)
        admitted = as_block(readings)
        if node is None or not len(admitted):
            return admitted
        block = admitted = self._not_ahead(node, admitted)
        keep = ~block.lost
        devices = node.devices
        known = [u in devices for u in block.uuids]
        if not all(known):
            keep &= np.array(known, bool)[block.dev]
        if not keep.all():
            block = block.take(keep)
        if not len(block):
            return admitted
        t = block.time_ns
        first = int(t[0])
        lowest = first if len(t) == 1 else int(t.min())
        if lowest < max(node.watermark_ns, first) - BEHIND_NS:
            node.behind = True  # it may hold a clock step back (_flush looks): markers added
            # before it is shared out would take the clock before it (add_markers flushes)
        node.watermark_ns = max(node.watermark_ns, int(t.max()))
        node.incoming.append(block)
        node.incoming_n += len(block)
        if node.incoming_n >= BUFFER_SAMPLES * max(1, len(devices)):
            self._flush(node)
        return admitted

    def add_in_order(
        self, hostname: str, readings: ReadingBlock, markers: Sequence[MarkerRec]
    ) -> list[ReadingBlock]:
        """One stream's readings and markers in its order: the readings before each marker (by
        seq), then it; markers past the last reading after them. A marker stamped just before
        the node's clock stepped back belongs to the readings before it in the stream; given
        after later readings, which carry the step, it went to the new clock's (a step read
        3,772 J for 88 J). Readings out of seq order (not from a daemon), or a marker without a
        seq: readings first. Returns what add_readings admitted, block by block."""
        seq = readings.seq
        in_order = (
            markers
            and len(readings)
            and all(m.seq is not None for m in markers)
            and bool(np.all(seq[1:] > seq[:-1]))
        )
        if not in_order:  # the hot path too: most messages hold no marker
            admitted = [self.add_readings(hostname, readings)] if len(readings) else []
            if markers:
                self.add_markers(hostname, markers)
            return admitted
        cuts = np.searchsorted(seq, [m.seq for m in markers], side="right").tolist()
        admitted, lo = [], 0
        for cut, group in itertools.groupby(
            sorted(zip(cuts, markers, strict=True), key=lambda x: x[0]), key=lambda x: x[0]
        ):
            if cut > lo:
                admitted.append(self.add_readings(hostname, readings.take(slice(lo, cut))))
                lo = cut
            self.add_markers(hostname, [m for _, m in group])
        if lo < len(readings):
            admitted.append(self.add_readings(hostname, readings.take(slice(lo, None))))
        return admitted

    def _not_ahead(self, node: NodeState, block: ReadingBlock) -> ReadingBlock:
        """The block without readings stamped ahead of the node's stream: after the first
        jump of more than max_ahead_ns, in time order, beyond the node's watermark (its first
        block's median before there is one), the collector's clock and the readings before it.
        One stray stamp (a clock stepped and stepped back, a hostile daemon) would move the
        watermark and the device's settled energy on by as much; a backlog, however long, has
        no such jump. A clock that really moved on sends whole blocks beyond the jump: the
        AHEAD_CONFIRM-th in a row is taken, and the watermark follows."""
        t, ok = block.time_ns, ~block.lost
        if not ok.any():
            return block
        base = node.watermark_ns or int(np.median(t[ok]))
        base = max(base, time.time_ns())
        if int(t[ok].max()) <= base + self.cfg.max_ahead_ns:  # no jump possible (hot path)
            node.ahead_blocks = 0
            return block
        # readings behind base make no jump (and int64 differences from them could wrap)
        s = np.maximum(np.sort(t[ok]), base)
        jump = np.diff(s, prepend=base) > self.cfg.max_ahead_ns
        if not jump.any():  # a backlog past base + max_ahead in steps: no jump in it
            node.ahead_blocks = 0
            return block
        ahead = ok & (t >= s[int(np.argmax(jump))])
        count = int(ahead.sum())
        if count == int(ok.sum()):
            node.ahead_blocks += 1
            if node.ahead_blocks >= AHEAD_CONFIRM:
                node.ahead_blocks = 0
                log.warning(
                    "node %r: readings now come %.0f s ahead of its previous ones and of this "
                    "collector's clock; following them (a clock stepped?)",
                    node.hostname, (int(t[ahead].min()) - base) / 1e9,
                )  # fmt: skip
                return block
        self._ahead += count
        if self._minutely("ahead"):
            log.warning(
                "node %r: %d reading(s) stamped over %.0f s ahead of its stream and of this "
                "collector's clock are stored but not joined (its clock, or ours?)",
                node.hostname, count, self.cfg.max_ahead_ns / 1e9,
            )  # fmt: skip
        return block.take(~ahead)

    def _flush(self, node: NodeState) -> None:
        """Share the node's waiting readings out to its devices (timeline columns, the idle
        tracker's thinned samples, the newest time), in each device's stream order: readings
        behind the device's newest are a clock step back (_clock_step) or late (_in_order)."""
        if not node.incoming:
            return
        block = ReadingBlock.concat(node.incoming)
        behind = node.behind
        node.incoming, node.incoming_n, node.behind = [], 0, False
        values, t_all = block.values, block.time_ns
        # A reading behind its device's newest is behind the readings before it in the stream
        # (this flush's blocks, in order) or starts a block behind its node's newest
        # (add_readings: node.behind)
        suspect = behind or bool(np.any(np.diff(t_all) < -BEHIND_NS))
        stepped: list[DeviceState] = []
        for uuid, idx in block.by_device():
            dev = node.devices.get(uuid)
            if dev is None:  # its node's device table changed meanwhile
                continue
            t = t_all[idx]
            if not suspect:
                self._take(dev, t, values, idx, block.power_from_avg)
                continue
            for lo, hi, what in self._in_order(dev, t, values[idx, _ENERGY]):
                if what == "late":
                    self._late += hi - lo
                    self._log_late(node, dev, hi - lo)
                    late = (int(t[lo:hi].min()), int(t[lo:hi].max()))
                    node.late_ranges = [*node.late_ranges[-7:], late]
                    continue
                if what == "step":
                    self._clock_step(node, dev, t[lo:], values[idx[lo:]])
                    stepped.append(dev)
                    continue
                self._take(dev, t[lo:hi], values, idx[lo:hi], block.power_from_avg)
        if stepped:  # the node's newest reading is now one of the new clock's
            node.watermark_ns = node.advanced_ns = max(d.last_ns or 0 for d in stepped)

    def _take(self, dev: DeviceState, t: np.ndarray, values, idx, avg) -> None:
        dev.buffer.append((t, values[idx, _POWER], values[idx, _ENERGY], avg[idx]))
        dev.buffered += len(idx)
        dev.idle.add_columns(t.tolist(), values[np.ix_(idx, _IDLE)])
        dev.last_ns = max(dev.last_ns or 0, int(t.max()))
        if dev.buffered >= BUFFER_SAMPLES:
            dev.timeline  # noqa: B018 - flushes the buffer

    # -- output ------------------------------------------------------------------------------
    def poll(self) -> JoinOutput:
        """Emit what is ready. Touches only intervals that have an end marker and runs whose
        start facts are due; open intervals are integrated ahead once per chunk of readings:
        a poll costs what changed, not what is open (10,000 open runs must not stall it)."""
        out = JoinOutput(dropped_markers=self._dropped, unmeasured_markers=self._unmeasured,
                         open_overflow=self._open_overflow,
                         readings_ahead=self._ahead)  # fmt: skip
        self._dropped = self._unmeasured = self._open_overflow = self._ahead = 0
        for node in self._nodes.values():
            self._flush(node)
            for key in list(node.new_runs):
                p = node.pending[key]
                if p.start is not None and p.devices and self._run_facts(node, p, out):
                    node.new_runs.pop(key, None)
            ending = [node.pending[k] for k in node.ending]
            for p in sorted(ending, key=lambda p: _KIND_ORDER[p.key[2]]):
                if p.start is None or not p.devices or p.key not in node.pending:
                    continue
                late = self._ready(node, p)
                if late is not None:
                    self._emit(node, p, late, out)
            if node.watermark_ns - node.advanced_ns >= self.cfg.chunk_ns:
                node.advanced_ns = node.watermark_ns
                limit = node.watermark_ns - self.cfg.keep_ns
                shared: dict[tuple[str, int, int], IntervalEnergy] = {}
                for p in node.pending.values():
                    if p.start is not None and p.devices:
                        self._advance(p, limit, shared)
            self._trim(node)
            self._refresh_idle(node, out)
        # what this poll's own flushes found too
        out.readings_late, out.clock_steps = self._late, self._clock_steps
        self._late = self._clock_steps = 0
        return out

    def _ready(self, node: NodeState, p: Pending) -> set[str] | None:
        """None while waiting; else the set of devices computed late (not settled)."""
        end = p.end.time_ns
        late = set()
        for uuid in p.devices:
            acc = p.accs.get(uuid)
            if acc is not None and acc.sealed:
                continue  # computed at a clock step
            if not self._devices[uuid].settled_past(end):
                if node.watermark_ns < end + self.cfg.late_bound_ns:
                    return None
                late.add(uuid)
        if not late and node.watermark_ns < end + self.cfg.late_bound_ns:
            every = self.cfg.rebuild_every_ns
            if not all(self._devices[uuid].model_due(every) for uuid in p.devices):
                return None  # the next rebuild computes it, with the others ending meanwhile
        return late

    def _emit(self, node: NodeState, p: Pending, late: set[str], out: JoinOutput) -> None:
        run_id, rank, kind, epoch, step = p.key
        start, end = p.start.time_ns, p.end.time_ns
        for uuid in p.devices:
            dev = self._devices[uuid]
            acc = p.accs.get(uuid) or Accumulator(start)
            flags = p.flags | ({"late"} if uuid in late else set())
            if acc.sealed:
                e = acc.result(start, end)
            elif end < start or end < acc.cut_ns:  # no readings can give it energy
                e = IntervalEnergy(
                    start, end, None, "none", None, 0.0, None, None, 0.0, frozenset()
                )
                if end < start:  # stamped before its start: the node's clock stepped back
                    flags |= {"clock_step", "incomplete"}
                else:  # the end came later than keep_ns: its readings are gone
                    flags |= {"late", "incomplete"}
                    self._marker_too_late(p)
            else:
                acc.add(dev.timeline.interval(acc.cut_ns, end))
                e = acc.result(start, end)
            if node.clock_steps and self._ambiguous(node, start, end):
                flags.add("clock_step")
            if node.late_ranges and any(lo <= end and start <= hi for lo, hi in node.late_ranges):
                flags.add("late")  # readings over it came late and were left out
            idle_w = self._run_idle.get((run_id, rank, uuid))
            shift = acc.shift_ns
            out.intervals.append(interval_record(p.key, uuid, e, idle_w, flags, shift))
        node.close(p.key)
        self._remember(p.key, end)
        if kind == "run":  # what of this session never found its partner
            pending = node.pending
            orphans = [k for k in node.by_rank.get((run_id, rank), ())
                       if (pending[k].start or pending[k].end).time_ns <= end]  # fmt: skip
            for k in orphans:
                node.close(k)
                out.dropped_markers += 1 + len(node.deferred.pop(k, ()))
        for m in node.deferred.pop(p.key, ()):
            self._add(node, m)

    def _marker_too_late(self, p: Pending) -> None:
        if self._minutely("too_late"):
            log.warning(
                "run %r rank %d: the end marker of %s came more than %.0f s after the readings "
                "past it (keep_ns): no energy for it (flagged late, incomplete)",
                p.key[0], p.key[1], p.key[2], self.cfg.keep_ns / 1e9,
            )  # fmt: skip

    def _advance(self, p: Pending, limit_ns: int, shared: dict) -> None:
        """Integrate a long open interval up to where readings are final, to free memory, but
        never past limit_ns (keep_ns behind the watermark): its end marker may yet come that
        late, and a piece past the end would carry energy from beyond it. Open intervals of a
        device cut at the same time take the same piece (shared: (uuid, cut, to) -> piece):
        after their first advance they all are, so thousands open (runs killed without their
        end, never to close) cost one integration per device and chunk, not one each."""
        for uuid in p.devices:
            dev = self._devices[uuid]
            acc = p.accs.get(uuid)
            cut = acc.cut_ns if acc is not None else p.start.time_ns
            if cut + self.cfg.chunk_ns > limit_ns or not dev.settled_past(cut + self.cfg.chunk_ns):
                continue
            safe = min(dev.settled(), limit_ns)
            if p.end is not None:
                safe = min(safe, p.end.time_ns)
            if safe - cut >= self.cfg.chunk_ns:
                if acc is None:
                    acc = p.accs[uuid] = Accumulator(p.start.time_ns)
                acc.add(shared_piece(shared, (uuid, cut, safe), dev.timeline, cut, safe))

    def _run_facts(self, node: NodeState, p: Pending, out: JoinOutput) -> bool:
        """At a run's start: its devices' idle power and the GPU's start temperature.
        False while the readings are not there yet."""
        run_id, rank = p.key[0], p.key[1]
        t0 = p.start.time_ns
        if self._facts_at.get((run_id, rank)) == t0:
            # known, or restored (set_run_idle: the database keeps the GPU's idle only); a
            # node's CPU and DRAM are judged from their idle history, as at the start
            for uuid in p.devices:
                if (run_id, rank, uuid) not in self._run_idle:
                    idle = self._devices[uuid].idle
                    idle.refresh(min(node.watermark_ns, t0), 0)
                    self._run_idle[(run_id, rank, uuid)] = idle.idle_power_w
            return True
        for uuid in p.devices:
            cov = self._devices[uuid].covered()
            if (cov is None or cov < t0) and node.watermark_ns < t0 + self.cfg.late_bound_ns:
                return False
        for uuid in p.devices:
            idle = self._devices[uuid].idle
            # Judge the readings up to the start now, without waiting `lag` for other runs'
            # late markers: a second misjudged in that race is outvoted by the history's
            # low percentiles and medians.
            idle.refresh(min(node.watermark_ns, t0), 0)
            self._run_idle[(run_id, rank, uuid)] = idle.idle_power_w  # None: not known yet
        self._facts_at[(run_id, rank)] = t0
        gpu = p.devices[0]
        if self._devices[gpu].kind == "gpu":
            temp = self._devices[gpu].idle.temperature_at(t0)
            out.rank_updates.append(
                RankUpdate(run_id, rank, temp, self._run_idle[(run_id, rank, gpu)], t0)
            )
        return True

    def _trim(self, node: NodeState) -> None:
        for uuid, dev in node.devices.items():
            if node.watermark_ns - dev.trimmed_ns < self.cfg.keep_ns // 2:
                continue  # amortized: a trim rebuilds the device's energy model
            dev.trimmed_ns = node.watermark_ns
            keep = node.watermark_ns - self.cfg.keep_ns
            for p in node.pending.values():
                if uuid in p.devices and p.start is not None:
                    acc = p.accs.get(uuid)
                    keep = min(keep, acc.cut_ns if acc is not None else p.start.time_ns)
            dev.timeline.trim(keep - 1_000_000_000)
            idle_keep = node.watermark_ns - self.cfg.keep_ns - self.cfg.idle_window_ns
            dev.idle.trim(min(idle_keep, keep - self.cfg.idle_window_ns - self.cfg.idle_guard_ns))

    def _refresh_idle(self, node: NodeState, out: JoinOutput) -> None:
        lag = max(self.cfg.late_bound_ns, self.cfg.idle_guard_ns)
        for dev in node.devices.values():
            changed = dev.idle.refresh(node.watermark_ns, lag)
            buckets = tuple(dev.idle.take_buckets())
            if changed or buckets:
                idle = dev.idle
                out.idle_updates.append(
                    IdleUpdate(dev.uuid, idle.idle_power_w, idle.measured_ns, buckets)
                )

    def _remember(self, key: tuple, end_ns: int) -> None:
        self._done[key] = end_ns
        self._done_order.append(key)
        if len(self._done_order) > _RECENT_KEYS:
            self._done.pop(self._done_order.popleft(), None)

    # -- state for metrics and tests ---------------------------------------------------------
    def progress(self, only: set[str] | None = None) -> list[RunProgress]:
        """Per run: latest epoch/step seen and the energy of its open run intervals so far
        (computed only for the runs in `only` when given; 0 for the others)."""
        energy: dict[str, float] = {}
        at_cov: dict[str, float | None] = {}  # per device: E at its newest reading
        counted: set[tuple[str, str]] = set()  # a GPU ranks share counts once per run
        for node in self._nodes.values():
            self._flush(node)
            for p in node.pending.values():
                if (
                    p.key[2] != "run"
                    or p.start is None
                    or (only is not None and p.key[0] not in only)
                ):
                    continue
                for uuid in p.devices:
                    if (p.key[0], uuid) in counted:
                        continue
                    counted.add((p.key[0], uuid))
                    acc, dev = p.accs.get(uuid), self._devices[uuid]
                    cut = acc.cut_ns if acc is not None else p.start.time_ns
                    cov = dev.covered()
                    so_far = acc.energy_j if acc is not None else 0.0
                    if cov is not None and cov > cut:
                        # A live gauge: E(newest) - E(cut), two look-ups, not a full interval
                        if uuid not in at_cov:
                            at_cov[uuid] = dev.timeline.energy_at(cov)
                        a, b = dev.timeline.energy_at(cut), at_cov[uuid]
                        so_far += (b - a) if a is not None and b is not None else 0.0
                    energy[p.key[0]] = energy.get(p.key[0], 0.0) + (so_far or 0.0)
        return [
            RunProgress(run_id, ep, st, energy.get(run_id, 0.0), ended, started)
            for run_id, (ep, st, ended, started) in self._progress.items()
        ]

    def forget_run(self, run_id: str) -> None:
        self.forget_runs({run_id})

    def forget_runs(self, run_ids: set[str]) -> None:
        """One pass for many runs (thousands may expire at once)."""
        if not run_ids:
            return
        for run_id in run_ids:
            self._progress.pop(run_id, None)
        self._facts_at = {k: v for k, v in self._facts_at.items() if k[0] not in run_ids}
        self._run_idle = {k: v for k, v in self._run_idle.items() if k[0] not in run_ids}

    def forget_node(self, hostname: str) -> list[str]:
        """Drop a node's state: its daemon is now read by another collector (or none), which
        rebuilds the node's open intervals from the database. Returns the node's devices."""
        node = self._nodes.pop(hostname, None)
        if node is None:
            return []
        for uuid in node.devices:
            self._devices.pop(uuid, None)
        return list(node.devices)

    def knows_node(self, hostname: str) -> bool:
        return hostname in self._nodes

    def node_names(self) -> list[str]:
        return sorted(self._nodes)

    def pending_keys(self) -> list[tuple]:
        return [k for n in self._nodes.values() for k in n.pending]

    def watermark_ns(self, hostname: str) -> int:
        node = self._nodes.get(hostname)
        return node.watermark_ns if node else 0
