"""The SQL adapter on SQLite and PostgreSQL: migrations, idempotent batched writes, reads."""

from __future__ import annotations

import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, func, select

from collector.errors import StoreError
from collector.records import IntervalRec, RankUpdate, SecondAggregate
from collector.store import reads as store_reads
from collector.store.db import alembic_config, create_db_engine, migrate, schema_revision
from collector.store.models import (
    Base,
    Interval,
    Marker,
    Reading,
    Reading1s,
    Run,
    RunRank,
    StreamGap,
)
from collector.store.store import Store
from collector.store.writebatch import GapRec, WriteBatch
from parawatt_proto.records import RunConfigRec
from tests.collector.synth import MS, T0, S, SynthDevice, marker, node, run_markers


def count(engine, model) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(model))


def sample_batch() -> WriteBatch:
    dev = SynthDevice("gpu-0")
    n = node("n1", [dev])
    cfg = RunConfigRec(world_size=1, model="resnet50", global_batch_size=64, local_batch_size=64,
                       tags={"sweep": "s1", "repeat": "0"}, recipe={"lr": "0.1"})  # fmt: skip
    ms, spans, end = run_markers(T0 + S, steps=3, step_ns=200 * MS, gap_ns=50 * MS)
    ms[0] = marker("run_start", ms[0].time_ns, config=cfg)
    b = WriteBatch()
    b.nodes[n.boot_id] = n
    b.add_readings(n.boot_id, dev.readings(T0, end + S))
    b.markers = [(n.boot_id, m) for m in ms]
    b.intervals = [IntervalRec("r1", 0, "gpu-0", "step", 0, k, a, z, 60.0, 50.0, "counter", 60.1,
                               0.5, 300.0, 310.0, 1.0, frozenset({"gap"}))
                   for k, (a, z) in enumerate(spans)]  # fmt: skip
    b.rank_updates = [RankUpdate("r1", 0, 41.5, 50.0)]
    b.aggregates = [
        SecondAggregate("gpu-0", T0 // S, 50, 50.0, 50.0, 1.0, 2.0, None, 45.0, None, None)
    ]
    b.gaps = [GapRec(n.boot_id, "missed", "127.0.0.1:1", 1, 5, None, T0)]
    b.cursors[n.boot_id] = ("127.0.0.1:1", 10_000, T0)
    return b


def test_migration_matches_models_and_is_idempotent(engine):
    migrate(engine)  # a second start-up
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert schema_revision(engine) == head
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_replayed_batch_makes_no_second_row(engine):
    store = Store(engine, chunk_rows=100)  # several executemany/COPY chunks per table
    store.write(sample_batch())
    first = {
        m: count(engine, m) for m in (Reading, Marker, Interval, Reading1s, StreamGap, Run, RunRank)
    }
    store.write(sample_batch())
    Store(engine).write(sample_batch())  # a restarted collector: cold caches
    again = {m: count(engine, m) for m in first}
    assert first == again
    assert first[Reading] > 100 and first[Marker] == 10 and first[Interval] == 3
    assert first[Run] == first[RunRank] == 1


def test_run_row_from_markers(engine):
    Store(engine).write(sample_batch())
    with engine.connect() as conn:
        run = conn.execute(select(Run)).one()
        rank = conn.execute(select(RunRank)).one()
        flags = conn.scalar(select(Interval.flags).limit(1))
    assert run.status == "completed" and run.end_ns > run.start_ns
    assert run.tags == {"sweep": "s1", "repeat": "0"} and run.model == "resnet50"
    assert rank.start_temperature_c == 41.5 and rank.idle_power_w == 50.0
    assert flags == "gap"


def test_reads_for_restart(engine):
    b = sample_batch()
    b.intervals = b.intervals[:1]  # steps 1 and 2 and the epoch/run are still open
    Store(engine).write(b)
    assert store_reads.cursor_for(engine, "127.0.0.1:1") == ("boot-1", 10_000)
    assert store_reads.cursor_for(engine, "elsewhere:1") is None
    open_keys = {(m.kind, m.step) for _, m in store_reads.open_markers(engine, 0)}
    assert ("step_start", 0) not in open_keys and ("step_start", 1) in open_keys
    assert ("run_start", 0) in open_keys and ("run_end", 0) in open_keys
    (n,) = store_reads.nodes(engine)
    assert n.hostname == "n1" and [d.uuid for d in n.devices] == ["gpu-0"]
    ((pk, boot, host, seq0),) = store_reads.replay_boots(engine, T0 + S)
    assert (boot, host) == ("boot-1", "n1") and store_reads.replay_boots(engine, T0, ["n2"]) == []
    chunks = list(store_reads.boot_readings(engine, pk, seq0, chunk_rows=30))
    rows = [r for c in chunks for r in c]
    assert len(chunks) > 1 and rows[0].time_ns == T0 + S and rows[0].energy_j is not None
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)
    assert [r.time_ns for r in rows] == sorted(r.time_ns for r in rows)
    cut = list(store_reads.boot_readings(engine, pk, seq0, stop_seq=rows[10].seq))
    assert [r.seq for c in cut for r in c] == [r.seq for r in rows[:10]]
    assert store_reads.aggregated_until(engine) == {"gpu-0": T0 // S}


def test_retention_trims_raw_readings_only(engine):
    store = Store(engine)
    store.write(sample_batch())
    deleted = store.trim_readings(T0 + S)
    assert deleted == 50
    assert count(engine, Reading1s) == 1


def test_disk_full_is_reported_retryable_and_keeps_nothing(tmp_path):
    """SQLite's max_page_count gives the very error a full disk gives (SQLITE_FULL)."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'full.db'}")
    migrate(engine)
    with engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
    limit = [pages]  # not one page more

    @event.listens_for(engine, "connect")
    def _cap(dbapi_conn, _record) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count={limit[0]}")

    engine.dispose()  # new connections get the cap
    with pytest.raises(StoreError, match="database or disk is full") as err:
        Store(engine).write(sample_batch())
    assert err.value.transient  # the writer retries it (and counts it in parawatt_db_errors)
    assert count(engine, Reading) == count(engine, Marker) == count(engine, Run) == 0
    limit[0] = 1_000_000  # space freed: the same batch goes in whole
    engine.dispose()
    Store(engine).write(sample_batch())
    assert count(engine, Marker) == 10
    engine.dispose()


def test_writer_applies_retention_relative_to_the_newest_reading(engine):
    from collector.metrics.state import LiveState
    from collector.store.writer import Writer

    b = sample_batch()
    newest = max(r.time_ns for r in b.reading_rows())
    w = Writer(Store(engine), LiveState(), 0.05, retention_s=1.0, retention_check_s=0.0).start()
    w.submit(b)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the writer trims between its commits
        with engine.connect() as conn:
            oldest = conn.scalar(select(func.min(Reading.time_ns)))
        if oldest and oldest > T0:
            break
        time.sleep(0.05)
    w.close()
    assert newest - S <= oldest <= newest - S + 20 * MS  # raw readings: the last second only
    assert count(engine, Reading1s) == 1 and count(engine, Interval) == 3  # kept for good


def test_a_reading_stamped_far_ahead_does_not_move_retention(engine):
    """A node whose clock stepped a year ahead for one reading: retention (a week) still counts
    from the collector's own clock at most a day ahead, and the readings of the last hour stay
    (counted from that one reading, every one of them was deleted)."""
    from collector.metrics.state import LiveState
    from collector.store.writer import Writer

    dev = SynthDevice("gpu-0")
    n = node("n1", [dev])
    now = time.time_ns()
    b = WriteBatch()
    b.nodes[n.boot_id] = n
    b.add_readings(n.boot_id, dev.readings(now - 3600 * S, now - 3600 * S + 10 * S, 100 * MS))
    b.add_readings(n.boot_id, dev.readings(now + 365 * 86400 * S, now + 365 * 86400 * S + 1, 1,
                                           seq0=1000))  # fmt: skip
    w = Writer(Store(engine), LiveState(), 0.05, retention_s=7 * 86400.0)
    w.start().submit(b)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and count(engine, Reading) < 101:
        time.sleep(0.05)
    w._trim()  # what the writer does every retention_check_s, once the rows are in
    w.close()
    assert count(engine, Reading) == 101


def test_readings_come_back_exactly_whatever_is_missing(engine):
    """Every NULL pattern, zeros, negative zero, huge and tiny values, lost readings: stored
    (binary COPY on PostgreSQL, multi-row INSERT on SQLite) and read back exactly, twice
    written (the replay path) and still once."""
    from parawatt_proto.block import ReadingBlock
    from parawatt_proto.fields import READING_FIELDS
    from parawatt_proto.records import ReadingRec

    n = node("n1", [SynthDevice("gpu-0"), SynthDevice("gpu-1")])
    values = [0.0, -0.0, 1e-300, 1.5e300, 123.456, None]
    rows = []
    for i in range(60):
        fields = {f: values[(i + k) % len(values)] for k, f in enumerate(READING_FIELDS)}
        if i % 7 == 0:
            fields = dict.fromkeys(READING_FIELDS)  # a lost device: nothing read
        rows.append(ReadingRec(i + 1, f"gpu-{i % 2}", T0 + i * MS, i % 7 == 0, **fields,
                               power_from_avg=False))  # fmt: skip
    for _ in range(2):
        b = WriteBatch()
        b.nodes[n.boot_id] = n
        b.add_readings(n.boot_id, ReadingBlock.from_rows(rows))
        Store(engine, chunk_rows=25).write(b)
    ((pk, _, _, seq0),) = store_reads.replay_boots(engine, T0)
    back = [r for chunk in store_reads.boot_readings(engine, pk, seq0) for r in chunk]
    assert len(back) == len(rows)
    for got, want in zip(back, rows, strict=True):
        assert got == want, (got, want)
