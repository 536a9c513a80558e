"""The streaming join's state and plain types (pure core; see join.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from collector.energy.timeline import CounterSpec, DeviceTimeline, IntervalEnergy
from collector.join.accum import Accumulator
from collector.join.idle import IdleTracker
from collector.records import IdleUpdate, IntervalRec, RankUpdate
from parawatt_proto.records import MarkerRec

BUFFER_SAMPLES = 512


@dataclass(frozen=True)
class JoinConfig:
    late_bound_ns: int = 2_000_000_000
    max_gap_ns: int | None = None  # None: 5x the median spacing of each device's readings
    chunk_ns: int = 5_000_000_000
    keep_ns: int = 30_000_000_000  # raw samples kept behind the watermark (late markers)
    # A device's energy model is rebuilt for new figures at most once per this much reading
    # time (a rebuild costs ~0.2 us per reading held): intervals ending meanwhile wait a
    # little and share one rebuild (with hundreds of GPUs stepping every 0.2 s, a rebuild per
    # poll per device was most of a collector's CPU).
    rebuild_every_ns: int = 500_000_000
    idle_window_ns: int = 30_000_000_000  # raw readings kept for the idle judgement
    idle_guard_ns: int = 2_000_000_000
    idle_update_ns: int = 10_000_000_000  # (unused: idle power changes as buckets close)
    idle_min_s: float = 30.0  # idle seconds in the history before idle power is trusted
    idle_bucket_ns: int = 60_000_000_000  # idle seconds summarised (and stored) together
    idle_history_ns: int = 6 * 3600 * 1_000_000_000  # history the idle power comes from
    # Bounds on what hostile or runaway senders can make the join hold (counted when hit):
    max_open: int = 200_000  # open intervals per node
    max_runs: int = 100_000  # runs whose progress is tracked (the oldest is forgotten)
    # Readings after a jump of more than this beyond their node's newest, the collector's
    # clock and the readings before them are set aside (stored, not joined) unless whole
    # blocks keep coming that far ahead (the node's clock really moved on): one stray stamp
    # would otherwise move the node's watermark and settled energy on by as much (Joiner.
    # _not_ahead). A backlog has no such jump; a daemon back after a pause is near our clock.
    max_ahead_ns: int = 5_000_000_000
    # A node's clock stepping back by more than this is not followed (readings that far behind
    # are set aside as late): an NTP step or a resumed VM is seconds to minutes; a stamp far
    # back is a broken or hostile sender (Joiner._in_order)
    max_step_back_ns: int = 3600 * 1_000_000_000


@dataclass
class JoinOutput:
    intervals: list[IntervalRec] = field(default_factory=list)
    rank_updates: list[RankUpdate] = field(default_factory=list)
    idle_updates: list[IdleUpdate] = field(default_factory=list)
    dropped_markers: int = 0  # starts/ends that never found their partner before the run ended
    unmeasured_markers: int = 0  # markers of a rank on a device the node's daemon does not measure
    open_overflow: int = 0  # markers refused because too many intervals were open
    readings_ahead: int = 0  # readings set aside: stamped too far ahead (JoinConfig.max_ahead_ns)
    # readings set aside: behind their device's newest, with an older counter (late or re-sent)
    readings_late: int = 0
    clock_steps: int = 0  # backward steps of a node's clock (StreamOrder._clock_step)


@dataclass(frozen=True)
class RunProgress:
    run_id: str
    epoch: int
    step: int
    energy_j: float  # so far, over all devices of the run's ranks
    ended: bool
    session_start_ns: int = 0  # latest RUN_START seen (a resumed run has several)


class DeviceState:
    def __init__(self, node: str, uuid: str, kind: str, spec: CounterSpec, cfg: JoinConfig):
        self.node, self.uuid, self.kind, self.spec = node, uuid, kind, spec
        self._timeline = DeviceTimeline(spec, cfg.max_gap_ns)
        self.idle = IdleTracker(
            cfg.idle_guard_ns, cfg.idle_min_s, cfg.idle_bucket_ns, cfg.idle_history_ns
        )
        self.margin_ns = int(2 * spec.update_s * 1e9)  # settled lags the readings about this much
        self.trimmed_ns = 0  # watermark at the last trim (trimming rebuilds the energy model)
        # Readings wait here, as column arrays (time_ns, power_w, energy_j, power_from_avg),
        # until the timeline is asked something: one extend per batch of a device's readings
        # instead of one per stream message (extend copies its arrays).
        self.buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.buffered = 0  # readings in self.buffer
        self.last_ns: int | None = None  # newest reading (of the node's current clock era)
        self.era = 0  # the node clock era of its timeline (NodeState.era; Joiner._clock_step)

    def set_spec(self, spec: CounterSpec) -> None:
        self.spec = spec
        self.margin_ns = int(2 * spec.update_s * 1e9)
        self._timeline.set_spec(spec)

    @property
    def timeline(self) -> DeviceTimeline:
        if self.buffer:
            if len(self.buffer) == 1:
                self._timeline.extend_columns(*self.buffer[0])
            else:
                self._timeline.extend_columns(
                    *(np.concatenate(c) for c in zip(*self.buffer, strict=True))
                )
            self.buffer, self.buffered = [], 0
        return self._timeline

    def new_era(self, cfg: JoinConfig) -> DeviceTimeline:
        """The node's clock stepped back: readings from here are on a new timeline (the old
        one's stamps overlap theirs). Returns the old timeline, for what is still open on it."""
        old = self.timeline
        self._timeline = DeviceTimeline(self.spec, cfg.max_gap_ns)
        self.last_ns, self.trimmed_ns = None, 0
        return old

    def model_due(self, every_ns: int) -> bool:
        """Whether an interval may be computed now: the energy model is current, or its last
        rebuild is at least every_ns of readings old."""
        tl = self.timeline
        return tl.model_current or (self.last_ns or 0) - tl.built_ns >= every_ns

    def covered(self) -> int | None:
        return self.last_ns

    def settled(self) -> int | None:
        """Energy before this time no longer changes with later readings."""
        return self.timeline.settled_until_ns()

    def settled_past(self, t_ns: int) -> bool:
        """settled() >= t_ns, asking the timeline (an energy-model rebuild) only once the
        readings are far enough past t_ns for the answer to be likely yes."""
        if self.last_ns is None or self.last_ns < t_ns + self.margin_ns:
            return False
        settled = self.settled()
        return settled is not None and settled >= t_ns


@dataclass
class Pending:
    key: tuple[str, int, str, int, int]  # run_id, rank, kind, epoch, step
    start: MarkerRec | None = None
    end: MarkerRec | None = None
    devices: tuple[str, ...] = ()
    accs: dict[str, Accumulator] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    era: int = 0  # the node's clock era its start marker came in (NodeState.era)


@dataclass
class NodeState:
    """A node's open intervals, indexed so that a poll touches only what can change: intervals
    with an end marker (`ending`), runs whose start facts are not measured yet (`new_runs`),
    and a rank's open intervals by (run_id, rank) (a run's end drops its orphans)."""

    hostname: str
    devices: dict[str, DeviceState] = field(default_factory=dict)
    watermark_ns: int = 0
    pending: dict[tuple, Pending] = field(default_factory=dict)
    # Markers of a key's next occurrence (a resumed session), held until the current one is out
    deferred: dict[tuple, list[MarkerRec]] = field(default_factory=dict)
    ending: dict[tuple, None] = field(default_factory=dict)
    new_runs: dict[tuple, None] = field(default_factory=dict)
    by_rank: dict[tuple[str, int], dict[tuple, None]] = field(default_factory=dict)
    advanced_ns: int = 0  # watermark when open intervals were last integrated ahead
    ahead_blocks: int = 0  # blocks in a row wholly beyond max_ahead_ns (AHEAD_CONFIRM: followed)
    # Backward clock steps (Joiner._clock_step): how many so far, and the stamp ranges they made
    # ambiguous, (first stamp after, newest stamp before), the latest few
    era: int = 0
    clock_steps: list[tuple[int, int]] = field(default_factory=list)
    # Stamp ranges of readings set aside as late (the latest few): intervals over them were
    # computed without them (Joiner._emit flags them late)
    late_ranges: list[tuple[int, int]] = field(default_factory=list)
    # Readings not yet shared out to the devices (Joiner._flush, at every poll)
    incoming: list = field(default_factory=list)
    incoming_n: int = 0
    behind: bool = False  # incoming holds readings behind the watermark (Joiner.add_readings)

    def open(self, key: tuple) -> Pending:
        p = self.pending[key] = Pending(key)
        self.by_rank.setdefault(key[:2], {})[key] = None
        return p

    def close(self, key: tuple) -> None:
        del self.pending[key]
        self.ending.pop(key, None)
        self.new_runs.pop(key, None)
        keys = self.by_rank.get(key[:2])
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self.by_rank[key[:2]]


def interval_record(
    key: tuple,
    uuid: str,
    e: IntervalEnergy,
    idle_w: float | None,
    flags: set[str],
    shift_ns: int = 0,
) -> IntervalRec:
    """shift_ns: real time the stamps leave out (a clock step back while it was open)."""
    run_id, rank, kind, epoch, step = key
    duration_s = (e.end_ns - e.start_ns + shift_ns) / 1e9
    active = None
    flags = set(flags)
    if e.energy_j is not None and idle_w is not None:
        active = e.energy_j - idle_w * duration_s
        if active < -(e.uncertainty_j or 0.0):  # idle power too high, or energy too low
            flags.add("below_idle")
    elif e.energy_j is not None:
        flags.add("idle_unknown")  # no trustworthy idle power for the device yet
    flags = frozenset(e.flags) | flags
    return IntervalRec(
        run_id=run_id,
        rank=rank,
        device_uuid=uuid,
        kind=kind,
        epoch=epoch,
        step=step,
        start_ns=e.start_ns,
        end_ns=e.end_ns,
        energy_j=e.energy_j,
        active_energy_j=active,
        source=e.source,
        power_integral_j=e.power_integral_j,
        uncertainty_j=e.uncertainty_j,
        avg_power_w=e.avg_power_w,
        max_power_w=e.max_power_w,
        coverage=e.coverage,
        flags=flags,
        uncertainty_bound_j=e.bound_j,
    )
