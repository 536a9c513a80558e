"""Start-up when the database is not there yet: retried for a while, then one clear error."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from alembic.script import ScriptDirectory

from collector.config import CollectorConfig
from collector.errors import StoreError
from collector.service import create_collector
from collector.store.db import alembic_config, schema_revision


def test_unreachable_database_is_retried_then_reported(caplog):
    cfg = CollectorConfig(db_url="postgresql+psycopg://parawatt@127.0.0.1:1/none",
                          metrics_listen=None, db_start_timeout_s=1.0,
                          db_retry_backoff_s=(0.1, 0.2))  # fmt: skip
    c = create_collector(cfg)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(StoreError, match="127.0.0.1:1"):
        c.start()
    c.close()
    assert time.monotonic() - started >= 0.9
    assert sum("retrying" in r.message for r in caplog.records) >= 3


def test_stop_ends_the_wait_for_the_database():
    cfg = CollectorConfig(db_url="postgresql+psycopg://parawatt@127.0.0.1:1/none",
                          metrics_listen=None, db_start_timeout_s=60.0)  # fmt: skip
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()  # SIGTERM while waiting
    started = time.monotonic()
    with pytest.raises(StoreError):
        create_collector(cfg).start(stop)
    assert time.monotonic() - started < 10


@pytest.mark.slow
@pytest.mark.postgres
def test_database_that_comes_up_late_is_used(pg_cluster, pg_url):
    from tests.collector.test_collector_outage import set_connections

    database = pg_url.rsplit("/", 1)[1]
    set_connections(pg_cluster.url(), database, False)
    threading.Timer(1.5, set_connections, (pg_cluster.url(), database, True)).start()
    cfg = CollectorConfig(db_url=pg_url, metrics_listen=None, db_retry_backoff_s=(0.2, 0.5))
    with create_collector(cfg) as c:
        head = ScriptDirectory.from_config(alembic_config(c.engine)).get_current_head()
        assert schema_revision(c.engine) == head
