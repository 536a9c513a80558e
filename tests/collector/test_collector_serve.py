"""`collector serve` as a process: collects, and on SIGTERM flushes everything and exits 0."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from sqlalchemy import func, select

from collector.db import create_db_engine
from collector.models import Interval, Reading
from tests.collector.drive import run_job
from tests.support.torchrun import PYTHON, REPO

pytestmark = pytest.mark.slow


def count(engine, *where) -> int:
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(where[0]).where(*where[1:]))
    except Exception:
        return 0


def test_serve_collects_and_flushes_on_sigterm(sim_daemon, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'serve.db'}"
    proc = subprocess.Popen(
        [PYTHON, "-m", "collector.cli", "serve", "--daemon", sim_daemon.address, "--db", db_url,
         "--metrics-listen", "127.0.0.1:0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    engine = create_db_engine(db_url)
    try:
        deadline = time.monotonic() + 60
        while count(engine, Reading) == 0:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.2)
        run_job(sim_daemon.address, "serve-run", epochs=1, steps=3, step_s=0.1)
        time.sleep(1.0)  # readings past the run's end, so every interval can be computed
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "flushing" in output and "Traceback" not in output
    assert count(engine, Interval, Interval.kind == "step") == 3
    assert count(engine, Interval, Interval.kind == "run") == 1
    engine.dispose()
