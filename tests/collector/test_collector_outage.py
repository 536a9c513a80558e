"""The database goes away mid-run: writes are retried, nothing is lost, nothing is fatal."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import create_engine, func, select, text

from collector.store.models import Interval, Reading, StreamGap
from tests.collector.drive import run_job, wait_for_intervals
from tests.collector.test_collector_service import config

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def set_connections(admin_url: str, database: str, allowed: bool) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
        if not allowed:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": database})  # fmt: skip
    admin.dispose()


def test_database_outage_is_survived_without_loss(sim_daemon, pg_cluster, pg_url):
    from collector.service import create_collector

    database = pg_url.rsplit("/", 1)[1]
    cfg = config([sim_daemon.address], pg_url, db_retry_backoff_s=(0.1, 0.5))
    with create_collector(cfg) as c:
        outage = threading.Event()

        def down_then_up(step: int) -> None:
            if step == 2:
                set_connections(pg_cluster.url(), database, False)
                outage.set()
            if step == 7:
                time.sleep(0.5)  # let the writer fail a few more times
                set_connections(pg_cluster.url(), database, True)

        run_job(sim_daemon.address, "run-o", epochs=2, steps=5, step_s=0.1, on_step=down_then_up)
        assert outage.is_set()
        assert wait_for_intervals(c.engine, "run-o", "run", 1, timeout_s=30) == 1
        assert c.flush(timeout_s=30)
        errors = c.live.db_errors_total
        with c.engine.connect() as conn:
            steps = conn.scalars(select(Interval.step).where(Interval.kind == "step")).all()
            seqs = conn.scalars(select(Reading.seq).order_by(Reading.seq)).all()
            gaps = conn.scalar(select(func.count()).select_from(StreamGap))
    assert errors > 0  # the outage was seen ...
    assert sorted(steps) == list(range(10))  # ... and cost no interval
    # readings and markers share one seq space: the only holes among reading seqs are markers
    assert seqs[-1] - seqs[0] + 1 - len(seqs) <= 2 + 2 * 2 + 10 * 2
    assert gaps == 0
