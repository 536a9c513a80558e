"""A row the database refuses is dropped alone: never the other rows of its batch.

The daemon's validation keeps such rows out; these tests hand them to the writer directly (as a
bug, or an older daemon, could), on SQLite and a real PostgreSQL server.
"""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import func, select

from collector.metrics.state import LiveState
from collector.store.db import create_db_engine, migrate
from collector.store.models import Marker, Reading, Run, RunRank
from collector.store.store import Store
from collector.store.writebatch import WriteBatch
from collector.store.writer import Writer
from parawatt_proto.records import RunConfigRec
from tests.collector.conftest import db_url, pg_cluster, pg_url  # noqa: F401
from tests.collector.synth import T0, S, SynthDevice, marker, node


@pytest.fixture
def engine(db_url):  # noqa: F811
    engine = create_db_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


def count(engine, model, *where) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(model).where(*where))


def batch_with(bad_markers) -> WriteBatch:
    """A node, 420 readings, a good run (start + steps) and the given bad markers, one batch."""
    dev = SynthDevice("gpu-0")
    n = node("n1", [dev])
    b = WriteBatch()
    b.nodes[n.boot_id] = n
    b.add_readings(n.boot_id, dev.readings(T0, T0 + 420 * 20_000_000)[:420])
    good = [marker("run_start", T0 + S, run_id="good", config=RunConfigRec(model="resnet50"))]
    good += [marker("step_start", T0 + S + k, run_id="good", step=k) for k in range(1, 4)]
    b.markers = [(n.boot_id, m) for m in [*good[:2], *bad_markers, *good[2:]]]
    b.cursors[n.boot_id] = ("127.0.0.1:1", 5000, T0)
    return b


def write_and_wait(engine, batch: WriteBatch) -> LiveState:
    live = LiveState()
    writer = Writer(Store(engine), live, flush_interval_s=0.05).start()
    writer.submit(batch)
    deadline = time.monotonic() + 60
    while not writer.idle() and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.close()
    return live


def test_an_overflowing_number_loses_only_its_own_row(engine, caplog):
    caplog.set_level(logging.ERROR, "collector.store.writer")
    bad = marker("step_start", T0 + 2 * S, run_id="bad\nFORGED line", step=2**64)
    live = write_and_wait(engine, batch_with([bad]))
    assert count(engine, Reading) == 420
    assert count(engine, Run, Run.run_id == "good") == 1
    assert count(engine, Marker, Marker.run_id == "good") == 4
    assert count(engine, Marker, Marker.run_id != "good") == 0
    assert live.rows_refused_total == 1 and live.readings_dropped_total == 0
    # Logged escaped: the run id's newline cannot start a forged log line.
    dropped = [r.getMessage() for r in caplog.records if "dropped a marker row" in r.getMessage()]
    assert len(dropped) == 1 and "bad\\nFORGED line" in dropped[0]
    assert all("\nFORGED" not in r.getMessage() for r in caplog.records)


@pytest.mark.postgres
def test_a_150_character_run_id_on_postgresql_loses_nothing_else(pg_url):  # noqa: F811
    engine = create_db_engine(pg_url)
    migrate(engine)
    long_id = "x" * 150  # beyond run.run_id's 128 characters: PostgreSQL refuses it
    bad = [
        marker("run_start", T0 + 2 * S, run_id=long_id, config=RunConfigRec(model="m")),
        marker("step_start", T0 + 2 * S + 1, run_id=long_id, step=1),
    ]
    live = write_and_wait(engine, batch_with(bad))
    assert count(engine, Reading) == 420
    assert count(engine, Run) == 1 and count(engine, RunRank) == 1
    assert count(engine, Marker, Marker.run_id == "good") == 4
    assert live.rows_refused_total == 2
    engine.dispose()
