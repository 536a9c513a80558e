"""The join's open state of some nodes, restored from the database.

Used at start-up (the collector's own nodes, after a restart) and whenever a daemon is taken
over while the collector runs (an inventory change, a new --shard count, a worker re-routing):
the node's devices, idle history and open markers are loaded, and its stored raw readings since
the oldest open marker (or the unfinished second) are replayed through the join and the
per-second aggregation. Readings at or past `stop_at` (the cursor the stream resumes from) are
left to the stream, so nothing is joined or aggregated twice. Only these nodes are touched:
with several collectors on one database the other nodes' intervals are theirs to compute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

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
    markers = store_reads.open_markers(engine, horizon, hosts)
    for m in markers:
        joiner.add_markers(m.hostname, [m])
    for run_id, rank, uuid, watts, start_ns in store_reads.run_idle(
        engine, {m.run_id for m in markers}
    ):
        joiner.set_run_idle(run_id, rank, uuid, watts, start_ns)
    candidates = [(s + 1) * NS for s in stored.values()] or [newest - cfg.keep_ns]
    if markers:
        # the idle judgement's window before the oldest open marker, and the readings whose
        # brackets pin the counter's update moments there (as the live join kept them)
        lead = max(cfg.idle_window_ns + cfg.idle_guard_ns, PHASE_HISTORY_NS) + NS
        candidates.append(min(m.time_ns for m in markers) - lead)
    since = max(horizon, min(candidates))
    for chunk in store_reads.readings_since(engine, since, hosts, stop_at=stop_at):
        done.readings += len(chunk)
        _replay(joiner, aggregator, chunk, emit)
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


def _replay(joiner: Joiner, aggregator: SecondAggregator, chunk, emit) -> None:
    by_host: dict[str, list] = {}
    for hostname, r in chunk:
        by_host.setdefault(hostname, []).append(r)
    aggregates: list[SecondAggregate] = []
    for hostname, readings in by_host.items():
        block = ReadingBlock.from_rows(readings)  # once, for the join and the aggregation
        aggregates.extend(aggregator.add(joiner.add_readings(hostname, block)))
    emit(joiner.poll(), aggregates)


def write_to(store) -> Callable[[JoinOutput, list[SecondAggregate]], None]:
    """emit for start-up: straight into the database (the writer is not running yet)."""

    def emit(out: JoinOutput, aggregates: list[SecondAggregate]) -> None:
        batch = WriteBatch(intervals=out.intervals, rank_updates=out.rank_updates,
                           idle_updates=out.idle_updates, aggregates=aggregates)  # fmt: skip
        if batch:
            store.write(batch)

    return emit
