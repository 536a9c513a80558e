"""Permanent database errors fail at once with one line; only transient ones are retried."""

from __future__ import annotations

import logging
import os
import subprocess

import pytest
from click.testing import CliRunner

from collector.cli import main
from collector.config import CollectorConfig
from collector.errors import StoreError
from collector.service import create_collector
from tests.collector.conftest import pg_cluster  # noqa: F401
from tests.support.postgres import _free_port
from tests.support.torchrun import PYTHON, REPO

LINGER = dict(db_start_timeout_s=600.0, db_retry_backoff_s=(0.05, 0.05))


def serve(db_url: str) -> subprocess.CompletedProcess:
    """`collector serve` with a database that never works: it must end by itself (a transient
    error would be retried for db_start_timeout_s, 30 s, first)."""
    return subprocess.run(
        [PYTHON, "-m", "collector.cli", "serve", "--daemon", "127.0.0.1:1", "--db", db_url,
         "--metrics-listen", "off"],
        cwd=REPO, capture_output=True, text=True, timeout=25,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def error_lines(res) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("error:")]


def test_a_directory_as_the_sqlite_file_is_one_line(tmp_path):
    res = serve(f"sqlite:///{tmp_path}")
    assert res.returncode == 1 and error_lines(res) == [
        f"error: bad database URL 'sqlite:///{tmp_path}': {tmp_path} is a directory"
    ]
    assert "Traceback" not in res.stderr and "retrying" not in res.stderr


def test_an_unreadable_sqlite_file_is_permanent(tmp_path):
    (tmp_path / "junk.db").write_bytes(b"not a database, " * 1000)
    with pytest.raises(StoreError, match="not a database") as err:
        create_collector(CollectorConfig(db_url=f"sqlite:///{tmp_path / 'junk.db'}",
                                         metrics_listen=None, **LINGER)).start()  # fmt: skip
    assert not err.value.transient


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("user", "database", "reason"),
    [("nobody", "postgres", 'role "nobody" does not exist'),
     ("postgres", "nodb", 'database "nodb" does not exist')],
)  # fmt: skip
def test_an_unknown_postgresql_role_or_database_is_one_line(pg_cluster, user, database, reason):  # noqa: F811
    res = serve(f"postgresql+psycopg://{user}@127.0.0.1:{pg_cluster.port}/{database}")
    (line,) = error_lines(res)
    assert res.returncode == 1 and reason in line
    assert "Traceback" not in res.stderr and "retrying" not in res.stderr


def test_connection_refused_is_retried_until_the_deadline(caplog):
    caplog.set_level(logging.WARNING, "collector.service")
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/postgres"
    config = CollectorConfig(db_url=url, metrics_listen=None, db_start_timeout_s=1.0,
                             db_retry_backoff_s=(0.1, 0.1))  # fmt: skip
    with pytest.raises(StoreError, match="Connection refused") as err:
        create_collector(config).start()
    assert err.value.transient
    assert sum("retrying" in r.getMessage() for r in caplog.records) >= 2


def test_malformed_daemon_addresses_are_refused_at_start(tmp_path):
    db = ["--db", f"sqlite:///{tmp_path / 'never.db'}"]
    for address in ("node1:50051\nerror: forged", "host:99999", "unix:", "[::1:5"):
        res = CliRunner().invoke(main, ["serve", *db, "--daemon", address])
        assert res.exit_code == 1 and res.output.startswith("error: --daemon: "), res.output
        assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "never.db").exists()
