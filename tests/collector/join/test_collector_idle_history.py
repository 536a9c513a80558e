"""Idle power from a persisted history: never from busy windows, unknown until trustworthy,
O(log runs) per reading, kept across a restart (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
import time

import pytest
from sqlalchemy import delete

from collector.energy.timeline import IntervalEnergy
from collector.join.idle import BusyIndex, IdleTracker
from collector.join.joiner import Joiner
from collector.join.state import interval_record
from collector.records import IdleBucket, IdleUpdate
from collector.service import create_collector
from collector.store import reads as store_reads
from collector.store.db import create_db_engine, migrate
from collector.store.models import IngestCursor, Interval, RunRank
from collector.store.reads import idle_history
from collector.store.store import Store
from collector.store.writebatch import WriteBatch
from parawatt_proto.records import ReadingRec
from power_daemon.config import SimParams
from tests.collector.drive import run_job, wait_for_intervals
from tests.collector.join.test_collector_join import CFG, busy_device, feed
from tests.collector.synth import MS, T0, S, SynthDevice, node, run_markers
from tests.collector.test_collector_service import config, rows

HISTORY_MINUTES = 300  # stored idle history (within the 6 h the collector reads back)


def reading(t: int, w: float, util: float | None = 0.0, clock: float | None = 345.0):
    return ReadingRec(0, "gpu-0", t, False, w, None, None, util, None, None, 40.0, clock)


def brute_busy(spans, guard, t):
    return any(s - guard <= t and (e is None or t <= e + guard) for s, e in spans)


def test_busy_index_agrees_with_a_brute_force_scan():
    rng = random.Random(3)
    index, spans = BusyIndex(guard_ns=5), []
    for k in range(400):
        s = rng.randrange(0, 10_000)
        e = s + rng.randrange(0, 200)
        index.start(("run", k), s)
        if rng.random() < 0.9:
            index.end(("run", k), e)
            spans.append((s, e))
        else:
            spans.append((s, None))
    for t in range(0, 10_400, 7):
        assert index.busy_at(t) == brute_busy(spans, 5, t), t


def test_thousands_of_runs_are_judged_right():
    """5,000 runs on one device: each reading is one bisection, not a scan of every run
    (bench/bench_collector-style timing is not asserted here; correctness is)."""
    tracker = IdleTracker(guard_ns=10 * MS, min_s=1.0, bucket_ns=S)
    for k in range(5_000):
        s = T0 + k * 200 * MS
        tracker.busy_start(("r", k), s)
        tracker.busy_end(("r", k), s + 20 * MS)
    # 1,000 s of readings at 50 Hz: busy 20 ms of every 200 ms, never a whole idle second
    for i in range(50_000):
        tracker.add(reading(T0 + i * 20 * MS, 300.0 if i % 10 < 2 else 60.0))
    tracker.refresh(T0 + 1_001 * S, 0)
    assert tracker.idle_power_w is None  # 180 ms idle stretches: no 1 s average among them
    late = T0 + 1_010 * S
    for i in range(200):  # then 4 s truly idle
        tracker.add(reading(late + i * 20 * MS, 61.0))
    tracker.refresh(late + 10 * S, 0)
    assert tracker.idle_power_w == pytest.approx(61.0)


def test_unmarked_load_before_a_run_never_becomes_idle():
    """Another job's square wave (no markers, high utilisation) right before the run: the idle
    power stays the floor seen hours of idle before, not the busy level."""
    tracker = IdleTracker(guard_ns=S, min_s=30.0, bucket_ns=10 * S)
    t = T0
    for _ in range(40 * 50):  # 40 s of real idle
        tracker.add(reading(t, 60.0 + random.Random(t).uniform(-2, 2)))
        t += 20 * MS
    for k in range(60 * 50):  # a minute of an unmarked 350/60 W square wave at 97 % util
        tracker.add(reading(t, 350.0 if k % 10 < 5 else 60.0, util=97.0, clock=1980.0))
        t += 20 * MS
    tracker.refresh(t, 0)
    assert tracker.idle_power_w == pytest.approx(60.0, abs=2.5)
    fresh = IdleTracker(guard_ns=S, min_s=30.0, bucket_ns=10 * S)
    for k in range(60 * 50):  # the same load without any idle history: unknown, not 350 W
        fresh.add(reading(T0 + k * 20 * MS, 350.0 if k % 10 < 5 else 60.0, util=97.0))
    fresh.refresh(T0 + 70 * S, 0)
    assert fresh.idle_power_w is None


def test_run_on_a_device_that_never_idled_is_flagged_idle_unknown():
    start = T0 + 3 * S
    ms, spans, end = run_markers(start, steps=6, step_ns=300 * MS, gap_ns=50 * MS,
                                 device_uuid="gpu-0")  # fmt: skip
    dev = busy_device("gpu-0", spans, run=(start, end))
    dev.levels = [(T0, 250.0)] + dev.levels  # busy (unmarked) from the first reading on
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    readings = [r for r in dev.readings(T0, end + 5 * S)]
    readings = [ReadingRec(r.seq, r.device_uuid, r.time_ns, False, r.power_w, None, r.energy_j,
                           90.0 if r.time_ns < start else None)
                for r in readings]  # fmt: skip
    out = feed(j, "n1", readings, ms)
    assert out and all("idle_unknown" in i.flags and i.active_energy_j is None for i in out)


def test_active_energy_below_idle_beyond_its_uncertainty_is_flagged():
    e = IntervalEnergy(T0, T0 + S, 40.0, "counter", 40.0, 1.0, 40.0, 41.0, 1.0, frozenset())
    rec = interval_record(("r", 0, "step", 0, 1), "gpu-0", e, 60.0, set())
    assert rec.active_energy_j == pytest.approx(-20.0) and "below_idle" in rec.flags
    ok = interval_record(("r", 0, "step", 0, 1), "gpu-0", e, 40.5, set())
    assert "below_idle" not in ok.flags and "idle_unknown" not in ok.flags


def test_idle_history_survives_a_restart(db_url):
    engine = create_db_engine(db_url)
    migrate(engine)
    dev = SynthDevice("gpu-0")
    store = Store(engine)
    batch = WriteBatch()
    batch.nodes["n1"] = node("n1", [dev])
    buckets = tuple(IdleBucket(T0 + k * 60 * S, 60, 58.0 + k % 3, 60.0) for k in range(5))
    batch.idle_updates.append(IdleUpdate("gpu-0", 59.0, T0 + 300 * S, buckets))
    store.write(batch)
    store.write(batch)  # replayed: no second row
    back = idle_history(engine, T0)
    assert back == {"gpu-0": list(buckets)}
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    j.load_idle_history("gpu-0", back["gpu-0"])
    tracker = j._devices["gpu-0"].idle
    assert tracker.idle_power_w == pytest.approx(59.0)  # median of 58, 59, 60, 58, 59
    engine.dispose()


def test_idle_seconds_judged_again_after_a_load_count_once():
    """A stream read anew from an older position (its cursor gone) brings readings whose
    buckets were stored and loaded back: each counts once, as the database keeps it, and the
    few fresh seconds do not outvote the history twice over."""
    idle = [reading(T0 + i * 20 * MS, 70.0) for i in range(5 * 50 + 1)]  # 5 s at 70 W
    first = IdleTracker(guard_ns=S, min_s=1.0, bucket_ns=S)
    for r in idle:
        first.add(r)
    first.refresh(T0 + 10 * S, 0)
    seen = first.take_buckets()
    assert len(seen) == 4
    # 6 stored minutes at 61.5 W hold the median against 4 fresh seconds, not against 8
    older = [IdleBucket(T0 - (6 - k) * 60 * S, 60, 61.5, 62.0) for k in range(6)]
    again = IdleTracker(guard_ns=S, min_s=1.0, bucket_ns=S)
    again.load(older + seen)
    for r in idle:  # the same readings, judged again
        again.add(r)
    again.refresh(T0 + 10 * S, 0)
    assert list(again.history) == older + seen and again.take_buckets() == []
    assert again.idle_power_w == pytest.approx(61.5)


def wait_for_nodes(engine, timeout_s: float = 30.0) -> list:
    """The stored nodes once there are any: Collector.flush waits for what was received, which
    is nothing yet while the daemon's stream is still connecting (a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while not (stored := store_reads.nodes(engine)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return stored


@pytest.mark.slow
def test_idle_history_follows_a_daemon_onto_a_new_address(start_sim_daemon, tmp_path):
    """A node whose daemon comes back on an address the database never saw (a new port, a
    rescheduled pod) is no node a rebuild restores: its devices' idle history is read when its
    stream first names it, so a run right away gets active energy (the stored idle power)
    instead of idle_unknown for the minute a new history takes."""
    daemon = start_sim_daemon()
    db = f"sqlite:///{tmp_path / 'moved.db'}"
    engine = create_db_engine(db)
    migrate(engine)
    cfg = config([daemon.address], db)
    with create_collector(cfg) as c:  # learns the node and its devices
        (stored,) = wait_for_nodes(c.engine)
        uuids = [d.uuid for d in stored.devices]
        hostname = stored.hostname
    batch = WriteBatch()
    # Hours of minute buckets, as a device read for long has: the second collector re-reads
    # the daemon's whole buffer (no cursor), one 1 s bucket per idle second at the sim's 70 W,
    # and however late a loaded machine starts the run, those few cannot outvote the history
    now = time.time_ns()
    buckets = tuple(
        IdleBucket(now - (HISTORY_MINUTES - k) * 60 * S, 60, 61.5, 62.0)
        for k in range(HISTORY_MINUTES)
    )
    for uuid in uuids:
        batch.idle_updates.append(IdleUpdate(uuid, 61.5, time.time_ns(), buckets))
    Store(engine).write(batch)
    with engine.begin() as conn:  # as if the daemon had only ever been read elsewhere
        conn.execute(delete(IngestCursor))
    engine.dispose()
    with create_collector(cfg) as c:
        run_job(daemon.address, "r", epochs=1, steps=3)
        assert wait_for_intervals(c.engine, "r", "run", 1) == 1
        c.flush()
        (run,) = rows(c.engine, Interval, Interval.kind == "run")
        (rank,) = rows(c.engine, RunRank)
    assert hostname and rank.idle_power_w == pytest.approx(61.5)
    assert "idle_unknown" not in run.flags and run.active_energy_j is not None


@pytest.mark.slow
@pytest.mark.parametrize("background_w", [0.0, 250.0])
def test_sim_gpu_that_never_idles_gets_no_idle_power(start_sim_daemon, tmp_path, background_w):
    """End to end: a sim GPU running another job's load between runs (never idle) gets
    idle_unknown, never its busy level as "idle"; the same sim idling gets its idle level."""
    daemon = start_sim_daemon(sim=SimParams(background_w=background_w))
    cfg = config([daemon.address], f"sqlite:///{tmp_path / 'never.db'}")
    with create_collector(cfg) as c:
        time.sleep(2.5)  # two idle seconds (or two seconds of the other job)
        run_job(daemon.address, "r", epochs=1, steps=3)
        assert wait_for_intervals(c.engine, "r", "run", 1) == 1
        c.flush()
        (run,) = rows(c.engine, Interval, Interval.kind == "run")
        (rank,) = rows(c.engine, RunRank)
    if background_w:
        assert rank.idle_power_w is None and "idle_unknown" in run.flags
        assert run.active_energy_j is None
    else:
        assert rank.idle_power_w == pytest.approx(SimParams().idle_w, abs=3.0)
        assert "idle_unknown" not in run.flags and run.active_energy_j > 0
