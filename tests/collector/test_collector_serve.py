"""`collector serve`: its options, and as a process: collects from every daemon given (one
unreachable is retried, not fatal), and on SIGTERM flushes everything and exits 0."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from collector.cli import main
from collector.store.db import create_db_engine
from collector.store.models import Interval, Reading
from tests.collector.drive import run_job
from tests.support.torchrun import PYTHON, REPO


def count(engine, *where) -> int:
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(where[0]).where(*where[1:]))
    except Exception:
        return 0


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], None, "no daemon to subscribe to: give --daemon HOST:PORT (or PARAWATT_DAEMONS)"),
        ([], " , ", "no daemon to subscribe to"),
        (["--daemon", "127.0.0.1:1,nohost"], None, "daemon address 'nohost' is not HOST:PORT"),
        (["--daemon", "127.0.0.1:1", "--daemon", "a:1,:2"], None, "daemon address ':2'"),
        ([], "127.0.0.1:1,127.0.0.1:x", "daemon address '127.0.0.1:x'"),
        (["--daemon", "127.0.0.1:1", "--retention", "5x"], None, "expected a duration"),
    ],
)
def test_serve_option_mistakes_give_one_line_and_status_1(tmp_path, args, env, message):
    db = ["--db", f"sqlite:///{tmp_path / 'never.db'}"]
    res = CliRunner().invoke(main, ["serve", *db, *args], env={"PARAWATT_DAEMONS": env})
    assert res.exit_code == 1 and message in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "never.db").exists()


def test_metrics_port_file_mistakes(tmp_path):
    db = ["--db", f"sqlite:///{tmp_path / 'p.db'}", "--daemon", "127.0.0.1:1"]
    port = ["--metrics-listen", "127.0.0.1:0", "--metrics-port-file"]
    res = CliRunner().invoke(main, ["serve", *db, *port, str(tmp_path / "no" / "port")])
    assert res.exit_code == 1 and "cannot write the metrics port to" in res.output, res.output
    res = CliRunner().invoke(
        main, ["serve", *db, "--metrics-listen", "off", "--metrics-port-file", "p"]
    )
    assert res.exit_code == 1 and "needs /metrics" in res.output
    assert "Traceback" not in res.output


def test_metrics_port_in_use_gives_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        db = ["--db", f"sqlite:///{tmp_path / 'p.db'}", "--daemon", "127.0.0.1:1"]
        res = CliRunner().invoke(main, ["serve", *db, "--metrics-listen", taken])
    assert res.exit_code == 1, res.output
    assert f"cannot serve metrics on {taken}" in res.output and "Traceback" not in res.output


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def daemons_up(text: str) -> dict[str, float]:
    return {m[0]: float(m[1])
            for m in re.findall(r'parawatt_daemon_up\{daemon="([^"]+)",node="[^"]*"\} (\S+)', text)}  # fmt: skip


@pytest.mark.slow
def test_serve_takes_daemons_from_the_environment_and_writes_the_port(start_sim_daemon, tmp_path):
    a, b = start_sim_daemon(hostname="node-a"), start_sim_daemon(hostname="node-b")
    dead = "127.0.0.1:1"  # nothing listens: retried with backoff, never fatal
    port_file = tmp_path / "metrics.port"
    env = {**os.environ, "PARAWATT_DAEMONS": f"{a.address},{b.address} {dead}"}
    proc = subprocess.Popen(
        [PYTHON, "-m", "collector.cli", "serve", "--db", f"sqlite:///{tmp_path / 's.db'}",
         "--metrics-listen", "127.0.0.1:0", "--metrics-port-file", str(port_file)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        up: dict[str, float] = {}
        while up != {a.address: 1.0, b.address: 1.0, dead: 0.0}:
            assert proc.poll() is None and time.monotonic() < deadline, (up, proc.stdout.read())
            time.sleep(0.2)
            if port_file.exists() and port_file.read_text().endswith("\n"):
                up = daemons_up(scrape(int(port_file.read_text())))
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in output, output
    assert f"daemon {dead}" in output  # the unreachable one is reported
    assert "alembic" not in output  # no "Context impl SQLiteImpl." noise at start


@pytest.mark.slow
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
