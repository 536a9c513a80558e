"""The join's open state of some nodes, restored from the database.

Used at start-up (the collector's own nodes, after a restart) and whenever a daemon is taken
over while the collector runs (an inventory change, a new --shard count, a worker re-routing):
the node's devices, idle history and open markers are loaded, and its stored raw readings since
the oldest open marker (or the unfinished second) are replayed through the join and the
per-second aggregation, each daemon boot's in its stream's order with its open markers where
the stream had them (after a clock step back, time order would merge the two clocks). Readings
at or past `stop_at` (the cursor the stream resumes from) are left to the stream, so nothing is
joined or aggregated twice. Only these nodes are touched: with several collectors on one
database the other nodes' intervals are theirs to compute.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine

from collector.config import CollectorConfig
from collector.energy.timeline import PHASE_HISTORY_NS
from collector.join.joiner import Joiner, JoinOutput
from collector.metrics.state import LiveState
from collector.records import SecondAggregate
from collector.store import reads as store_reads
from collector.store.aggregate import NS, SecondAggregator
from collector.store.writebatch import WriteBatch
from parawatt_proto.block import ReadingBlock
from parawatt_proto.records import MarkerRec, ReadingRec

log = logging.getLogger("collector.rebuild")
STRAY_RUN = 8  # readings of one device in a row, at most, stamped ahead of those around them


@dataclass
class Restored:
    markers: int = 0
    readings: int = 0
    seconds: float = 0.0


def restore_nodes(
    engine: Engine,
    config: CollectorConfig,
    joiner: Joiner,
    live: LiveState,
    aggregator: SecondAggregator,
    hosts: list[str],
    emit: Callable[[JoinOutput, list[SecondAggregate]], None],
    stop_at: dict[str, int] | None = None,
) -> Restored:
    """Load these nodes' open state into joiner/aggregator; what the replay completes goes to
    emit(join output, per-second aggregates). stop_at: boot_id -> next_seq of the stream."""
    started, done = time.monotonic(), Restored()
    if not hosts:
        return done
    cfg = joiner.cfg
    uuids: set[str] = set()
    for node in store_reads.nodes(engine, hosts):
        joiner.add_node(node)
        live.add_node(node)
        uuids.update(d.uuid for d in node.devices)
    load_idle(engine, config, joiner, live, sorted(uuids))
    stored = {u: s for u, s in store_reads.aggregated_until(engine).items() if u in uuids}
    aggregator.set_done(stored)
    newest = store_reads.newest_reading_ns(engine)
    if newest is None:
        return done
    horizon = newest - int(config.rebuild_horizon_s * 1e9)
    with_boots = store_reads.open_markers(engine, horizon, hosts)
    markers = [m for _, m in with_boots]
    for run_id, rank, uuid, watts, start_ns in store_reads.run_idle(
        engine, {m.run_id for m in markers}
    ):
        joiner.set_run_idle(run_id, rank, uuid, watts, start_ns)
    # the unfinished seconds, and what the live join kept for markers still to come (a marker
    # may reach its daemon seconds after its stamp: its run_start after the crash)
    candidates = [(s + 1) * NS for s in stored.values()] + [newest - cfg.keep_ns]
    if markers:
        # the idle judgement's window before the oldest open marker, and the readings whose
        # brackets pin the counter's update moments there (as the live join kept them)
        lead = max(cfg.idle_window_ns + cfg.idle_guard_ns, PHASE_HISTORY_NS) + NS
        candidates.append(min(m.time_ns for m in markers) - lead)
    since = max(horizon, min(candidates))
    boots = store_reads.replay_boots(engine, since, hosts)
    # Markers go in where their stream had them, among the readings (as the live join took
    # them: a marker stamped by a clock that has since stepped back belongs to the readings
    # around it in the stream, not to those around its stamp); the rest first, by time.
    queued: dict[str, list[MarkerRec]] = {}
    replayed = {boot for _, boot, _, _ in boots}
    for boot, m in with_boots:
        if boot in replayed and m.seq is not None:
            queued.setdefault(boot, []).append(m)
        else:
            joiner.add_markers(m.hostname, [m])
    stop = stop_at or {}
    for pk, boot, host, seq0 in boots:
        queue = sorted(queued.pop(boot, []), key=lambda m: m.seq)
        last = store_reads.stamps_before(engine, pk, seq0)
        for chunk in store_reads.boot_readings(engine, pk, seq0, stop.get(boot)):
            done.readings += len(chunk)
            chunk = _without_strays(chunk, last, cfg.max_ahead_ns)
            queue = _replay(joiner, aggregator, host, chunk, queue, emit)
        if queue:  # after the last stored reading
            joiner.add_markers(host, queue)
            emit(joiner.poll(), [])
    done.markers, done.seconds = len(markers), time.monotonic() - started
    return done


def load_idle(
    engine: Engine, config: CollectorConfig, joiner: Joiner, live: LiveState, uuids: list[str]
) -> None:
    """These devices' idle power and idle history from the database, into the join (and the
    gauges): a device seen again, after a collector restart or on a daemon's new address,
    needs no new minute of idle before its runs get active energy."""
    if not uuids:
        return
    for uuid, watts, measured_ns in store_reads.device_idle(engine, uuids):
        joiner.set_idle(uuid, watts, measured_ns)
        live.idle_w[uuid] = watts
    history_from = time.time_ns() - int(config.idle_history_s * 1e9)
    for uuid, buckets in store_reads.idle_history(engine, history_from, uuids).items():
        joiner.load_idle_history(uuid, buckets)


def _without_strays(chunk: list[ReadingRec], last: dict[str, int], ahead_ns: int):
    """The chunk less what the live join set aside as stamped too far ahead of its clock
    (Joiner._not_ahead): at a replay, long after, no stamp is ahead of the clock, and the
    readings after a stray would all come behind it (late). A stray is a run of at most
    STRAY_RUN readings of one device stamped more than ahead_ns past the reading before them,
    the reading after them that far back again: a clock that jumped ahead and stayed (the live
    join followed it), or stepped back, makes no such run. last: each device's last stamp
    before this chunk (updated; a run across a chunk's end is kept)."""
    t = np.fromiter((r.time_ns for r in chunk), dtype=np.int64, count=len(chunk))
    uuids = [r.device_uuid for r in chunk]
    stray = np.zeros(len(chunk), dtype=bool)
    for uuid in dict.fromkeys(uuids):
        idx = np.flatnonzero(np.fromiter((u == uuid for u in uuids), bool, len(uuids)))
        ts = t[idx]
        prev = last.get(uuid)
        last[uuid] = int(ts[-1])
        if prev is not None:
            idx, ts = np.concatenate(([-1], idx)), np.concatenate(([prev], ts))
        d = np.diff(ts)  # d[k]: ts[k + 1] - ts[k]; int64 stamps are anyone's: no wrapping
        up = np.flatnonzero((ts[1:] > ts[:-1]) & (d > ahead_ns))
        if not len(up):
            continue
        down = np.flatnonzero((ts[1:] < ts[:-1]) & (-d > ahead_ns))
        for k in up:
            j = int(np.searchsorted(down, k, side="right"))
            if j < len(down) and down[j] - k <= STRAY_RUN:
                stray[idx[k + 1 : down[j] + 1]] = True
    if not stray.any():
        return chunk
    log.warning("replay: %d reading(s) stamped ahead of those around them set aside, as the "
                "live join did", int(stray.sum()))  # fmt: skip
    return [r for r, bad in zip(chunk, stray, strict=True) if not bad]


def _replay(joiner: Joiner, aggregator: SecondAggregator, host: str, chunk: list[ReadingRec],
            queue: list[MarkerRec], emit) -> list[MarkerRec]:  # fmt: skip
    """One chunk of a boot's readings, with the queued markers (by seq) that came before one of
    its readings; returns the markers still to come."""
    due = bisect.bisect_left(queue, chunk[-1].seq, key=lambda m: m.seq) if chunk else 0
    block = ReadingBlock.from_rows(chunk)  # once, for the join and the aggregation
    aggregates: list[SecondAggregate] = []
    for admitted in joiner.add_in_order(host, block, queue[:due]):
        aggregates.extend(aggregator.add(admitted))
    emit(joiner.poll(), aggregates)
    return queue[due:]


def write_to(store) -> Callable[[JoinOutput, list[SecondAggregate]], None]:
    """emit for start-up: straight into the database (the writer is not running yet)."""

    def emit(out: JoinOutput, aggregates: list[SecondAggregate]) -> None:
        batch = WriteBatch(intervals=out.intervals, rank_updates=out.rank_updates,
                           idle_updates=out.idle_updates, aggregates=aggregates)  # fmt: skip
        if batch:
            store.write(batch)

    return emit
