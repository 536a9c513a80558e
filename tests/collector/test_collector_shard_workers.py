"""`collector serve --workers N`: worker processes, each a whole collector for its share of the
daemons (routed like --shard), one database, one merged /metrics."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from collector.config import CollectorConfig
from collector.ingest.discovery import balanced_shards
from collector.store import queries
from collector.store.db import create_db_engine
from collector.store.models import Boot, Node, Reading
from collector.workers import WorkerPool
from tests.collector.drive import run_job, wait_for_intervals
from tests.support.torchrun import PYTHON, REPO


def readings_by_node(engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Node.hostname, func.count())
            .select_from(Reading)
            .join(Boot, Boot.id == Reading.boot_id)
            .join(Node, Node.id == Boot.node_id)
            .group_by(Node.hostname)
        )
        return dict(rows.all())


def wait_for(predicate, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def test_workers_share_the_daemons_and_one_metrics(start_sim_daemon, tmp_path):
    # Six nodes; the job's two ranks sit on nodes that go to different workers.
    daemons = [start_sim_daemon(hostname=f"node-{i}") for i in range(6)]  # rank r: GPU r
    worker_of = balanced_shards([d.address for d in daemons], 2)
    by_worker = {k: [d for d in daemons if worker_of[d.address] == k] for k in (0, 1)}
    assert len(by_worker[0]) == len(by_worker[1]) == 3  # six targets, two workers: 3 each
    inventory = tmp_path / "sd.json"
    inventory.write_text(json.dumps([{"targets": [d.address for d in daemons]}]))
    db = f"sqlite:///{tmp_path / 'p.db'}"
    cfg = CollectorConfig(daemons_file=str(inventory), db_url=db, metrics_listen="127.0.0.1:0",
                          late_bound_s=1.0, flush_interval_s=0.1, inventory_poll_s=0.2)  # fmt: skip
    engine = create_db_engine(db)
    with WorkerPool(cfg, 2).start() as pool:
        assert wait_for(lambda: len(readings_by_node(engine)) == 6)
        a, b = by_worker[0][0], by_worker[1][0]
        for rank, d in enumerate((a, b)):  # one run, a rank on each worker's node
            run_job(d.address, "spread", epochs=1, steps=3, ranks=(rank,))
        assert wait_for_intervals(engine, "spread", "run", 2, timeout_s=60) == 2
        assert pool.flush()
        steps = queries.job_steps(engine, "spread")
        assert [s.ranks for s in steps] == [2, 2, 2]

        text = scrape(pool.metrics_port)
        up = [line for line in text.splitlines() if line.startswith("parawatt_daemon_up{")]
        for d in daemons:  # every daemon's health, from whichever worker reads it
            (line,) = [x for x in up if f'daemon="{d.address}"' in x]
            assert line.endswith(" 1.0")
        assert 'parawatt_collector_worker_up{worker="1"} 1.0' in text
        assert 'parawatt_collector_worker_up{worker="2"} 1.0' in text
        written = [float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("parawatt_readings_written_total")]  # fmt: skip
        assert len(written) == 1 and written[0] > 0  # one series: the workers' sum
        # The run's ranks are in different workers: its energy series is their sum = SQL's
        run_j = [s.value for f in text_string_to_metric_families(text)
                 if f.name == "parawatt_run_energy_joules" for s in f.samples
                 if s.labels.get("run_id") == "spread" and s.name.endswith("_total")]  # fmt: skip
        assert len(run_j) == 1
        assert run_j[0] == pytest.approx(queries.run_summary(engine, "spread").energy_j, rel=1e-6)

        inventory.write_text(json.dumps([{"targets": [a.address]}]))  # five nodes leave
        gone = f'daemon="{b.address}"'
        assert wait_for(lambda: gone not in scrape(pool.metrics_port))
        stats = pool.stats()
        assert stats["rss_bytes"] > 0 and stats["written"] > 0
    engine.dispose()


@pytest.mark.slow
def test_serve_with_workers_stops_on_sigterm_and_flushes(start_sim_daemon, tmp_path):
    d = start_sim_daemon(hostname="node-x", sim_devices=1)
    db = tmp_path / "p.db"
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [PYTHON, "-m", "collector.cli", "serve", "--daemon", d.address, "--workers", "2",
         "--db", f"sqlite:///{db}", "--metrics-listen", "127.0.0.1:0",
         "--metrics-port-file", str(port_file)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert wait_for(port_file.exists), proc.stderr.read() if proc.poll() is not None else ""
        run_job(d.address, "cli-run", epochs=1, steps=2)
        engine = create_db_engine(f"sqlite:///{db}")
        assert wait_for_intervals(engine, "cli-run", "run", 1, timeout_s=60) == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "stopping: flushing to the database" in err and "Traceback" not in err
        assert readings_by_node(engine)["node-x"] > 0
        engine.dispose()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
