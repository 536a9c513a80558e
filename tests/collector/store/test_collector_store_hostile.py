"""The writer under abuse: RUN_START floods, the SQLite file deleted, a stuck or failing database.

(bench/bench_hostile.py --only flood prints run starts written per second and the readings' lag.)
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import event, select

from collector.errors import StoreError
from collector.metrics.state import LiveState
from collector.store import reads as store_reads
from collector.store.db import create_db_engine, migrate
from collector.store.models import IngestCursor, Reading, Run, RunRank
from collector.store.store import Store
from collector.store.writebatch import WriteBatch
from collector.store.writer import Writer
from parawatt_proto.records import RunConfigRec
from tests.collector.store.test_collector_store import count
from tests.collector.synth import MS, T0, S, SynthDevice, marker, node


def flood(runs: int, t0: int = T0 + S) -> WriteBatch:
    """One node's readings and `runs` RUN_STARTs (ranks 0 and 1 of runs/2 runs)."""
    dev = SynthDevice("gpu-0")
    n = node("n1", [dev])
    b = WriteBatch()
    b.nodes[n.boot_id] = n
    b.add_readings(n.boot_id, dev.readings(T0, T0 + 2 * S))
    cfg = RunConfigRec(world_size=2, model="m0")
    b.markers = [(n.boot_id, marker("run_start", t0 + i, run_id=f"f{i // 2}", rank=i % 2,
                                    config=cfg))
                 for i in range(runs)]  # fmt: skip
    b.cursors[n.boot_id] = ("127.0.0.1:1", 10**6, T0)
    return b


def test_a_run_start_flood_is_a_few_statements_not_two_per_marker(engine):
    """30,000 RUN_STARTs stalled the writer for minutes (two upserts built per marker)."""
    store = Store(engine)
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    store.write(flood(2000))
    assert len(statements) < 30, len(statements)
    assert count(engine, Run) == 1000 and count(engine, RunRank) == 2000


def test_batched_run_starts_keep_the_run_rules(engine):
    """Rank 0's configuration wins whatever the order; a start after the run's end reopens it;
    the run's start is the earliest; a replay changes nothing."""
    store = Store(engine)
    n = node("n1", [SynthDevice("gpu-0")])
    first = WriteBatch(nodes={n.boot_id: n})
    first.markers = [(n.boot_id, marker("run_start", T0 + S, config=RunConfigRec(model="a"))),
                     (n.boot_id, marker("run_end", T0 + 2 * S))]  # fmt: skip
    store.write(first)
    again = WriteBatch(nodes={n.boot_id: n})
    again.markers = [
        (n.boot_id, marker("run_start", T0 + 3 * S, rank=1, config=RunConfigRec(model="b"))),
        (n.boot_id, marker("run_start", T0 + 4 * S, rank=0, config=RunConfigRec(model="c"))),
        (n.boot_id, marker("run_start", T0 + S // 2, run_id="r2", rank=1,
                           config=RunConfigRec(model="x"))),
        (n.boot_id, marker("run_start", T0 + S, run_id="r2", rank=0,
                           config=RunConfigRec(model="y"))),
    ]  # fmt: skip
    store.write(again)
    store.write(again)
    with engine.connect() as conn:
        runs = {r.run_id: r for r in conn.execute(select(Run))}
        ranks = {(r.run_id, r.rank): r for r in conn.execute(select(RunRank))}
    assert runs["r1"].status == "running" and runs["r1"].end_ns is None  # reopened
    assert runs["r1"].start_ns == T0 + S and runs["r1"].model == "c"
    assert runs["r2"].start_ns == T0 + S // 2 and runs["r2"].model == "y"
    assert ranks[("r1", 0)].start_ns == T0 + 4 * S and ranks[("r1", 0)].end_ns is None
    assert len(ranks) == 4


def test_readings_are_not_held_behind_a_run_start_flood(engine):
    """A commit takes at most max_run_markers run markers: the readings go in between (one
    part each), the rest of the flood (and the cursor, never ahead of a marker) later."""
    w = Writer(Store(engine), LiveState(), max_run_markers=300)
    b = flood(1000)
    readings = b.reading_count
    assert w._write(b)
    assert count(engine, Reading) == readings  # all of them, at once
    assert count(engine, RunRank) == 600  # the first commit, and one between reading parts
    assert count(engine, IngestCursor) == 0
    while w._backlog:
        batch, w._backlog = w._backlog, WriteBatch()
        assert w._write(batch)
    assert count(engine, RunRank) == 1000 and count(engine, IngestCursor) == 1


def test_a_deleted_sqlite_file_is_noticed_counted_and_created_again(tmp_path, caplog):
    """Deleting the file under the collector went unnoticed: every later write went into the
    unlinked inode (readings_written_total rising, no error)."""
    path = tmp_path / "p.db"
    engine = create_db_engine(f"sqlite:///{path}")
    migrate(engine)
    live = LiveState()
    w = Writer(Store(engine), live, 0.02, file_check_s=0.0).start()
    dev = SynthDevice("gpu-0")
    n = node("n1", [dev])
    b = WriteBatch(nodes={n.boot_id: n})
    b.add_readings(n.boot_id, dev.readings(T0, T0 + S))
    w.submit(b)
    wait_idle(w)
    path.unlink()
    later = WriteBatch()  # no NodeInfo again: the node is written again by the writer
    later.add_readings(n.boot_id, dev.readings(T0 + 2 * S, T0 + 3 * S, seq0=1000))
    later.cursors[n.boot_id] = ("addr:1", 2000, T0 + 3 * S)
    w.submit(later)
    wait_idle(w)
    w.close()
    engine.dispose()
    assert live.db_file_lost_total == 1
    assert any(r.levelno == logging.ERROR and "was deleted" in r.getMessage()
               and "Restart the collector" in r.getMessage() for r in caplog.records)  # fmt: skip
    fresh = create_db_engine(f"sqlite:///{path}")
    assert count(fresh, Reading) == later.reading_count  # in the file at the path
    # no read position past the lost seconds: a restart reads the daemons' buffers again
    assert store_reads.cursor_for(fresh, "addr:1") is None
    fresh.dispose()


def wait_idle(w: Writer, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not w.idle() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert w.idle()


class BlockedStore:
    """A database that takes no commit until `release` is set (then fails it: disk full)."""

    chunk_rows = 10_000

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, batch: WriteBatch) -> None:
        self.entered.set()
        self.release.wait()
        raise StoreError("database or disk is full")

    def check_file(self) -> None:
        return None

    def take_refused(self) -> int:
        return 0

    def describe(self) -> str:
        return "sqlite:///stuck.db"


def readings(n: int, seq0: int = 0) -> WriteBatch:
    b = WriteBatch()
    b.add_readings(
        "boot-1", SynthDevice("gpu-0").readings(T0, T0 + n * 10 * MS, 10 * MS, seq0=seq0)
    )
    return b


def test_the_backlog_gauge_counts_the_batch_being_retried():
    """It swung between ~200 and ~20,000 while the disk was full: the batch being written was
    left out."""
    store = BlockedStore()
    live = LiveState()
    w = Writer(store, live, 0.01, backoff_s=(0.01, 0.01)).start()
    first = readings(1000)
    w.submit(first)
    assert store.entered.wait(10)
    w.submit(readings(10, seq0=10_000))
    assert live.db_backlog_readings == first.reading_count + 10
    store.release.set()
    time.sleep(0.1)
    assert live.db_backlog_readings == first.reading_count + 10  # failed: all of it waits
    w._join_margin_s = 0.1
    w.close(0.1)


def test_a_stuck_writer_at_shutdown_says_what_it_left_unwritten(caplog):
    store = BlockedStore()
    w = Writer(store, LiveState(), 0.01)
    w._join_margin_s = 0.2
    w.start().submit(readings(500))
    assert store.entered.wait(10)
    w.submit(readings(7, seq0=10_000))
    w.close(0.1)
    store.release.set()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("507 readings" in e and "daemons' buffers still hold them" in e
               and "stored cursors" in e for e in errors), errors  # fmt: skip
