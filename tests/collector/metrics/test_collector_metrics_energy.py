"""Run energy on Prometheus equals SQL once a run is complete, sub-second runs included: the
counter carries only completed rank sessions; the live estimate is a separate gauge."""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.config import CollectorConfig
from collector.service import create_collector
from collector.store.queries import run_summary
from power_daemon.config import DaemonConfig
from power_daemon.serve.server import create_server
from tests.collector.drive import run_job, wait_for_intervals

RUNS = [f"short-{i}" for i in range(4)]


def scrape(port: int) -> dict[str, dict[str, tuple[dict, float]]]:
    """metric name -> run_id -> (labels, value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, dict] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if "run_id" in s.labels:
                out.setdefault(s.name, {})[s.labels["run_id"]] = (s.labels, s.value)
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    daemon, port = create_server(
        DaemonConfig(listen="127.0.0.1:0", backend="sim", rapl="off", hostname="node-x")
    )
    daemon.start()
    db_url = f"sqlite:///{tmp_path_factory.mktemp('e') / 'p.db'}"
    cfg = CollectorConfig(
        daemons=(f"127.0.0.1:{port}",),
        db_url=db_url,
        metrics_listen="127.0.0.1:0",
        late_bound_s=1.0,
        flush_interval_s=0.1,
    )
    collector = create_collector(cfg).start()
    for i, run_id in enumerate(RUNS):  # 0.1 s to 0.5 s of steps: shorter than a second
        run_job(f"127.0.0.1:{port}", run_id, epochs=1, steps=1 + i, step_s=0.1, gap_s=0.01,
                ranks=(0, 1))  # fmt: skip
    for run_id in RUNS:
        assert wait_for_intervals(collector.engine, run_id, "run", 2) == 2
    collector.flush()
    yield collector, db_url
    collector.close()
    daemon.close()


def test_sub_second_runs_agree_with_sql(finished):
    collector, db_url = finished
    collector.pipeline._progress_ns = 0  # refresh run progress on the next poll
    collector.flush()
    got = scrape(collector.metrics_port)
    counters = got["parawatt_run_energy_joules_total"]
    estimates = got["parawatt_run_energy_estimate_joules"]
    for run_id in RUNS:
        sql = run_summary(collector.engine, run_id)
        # Planned 0.1-0.4 s of steps; a loaded machine oversleeps, so only "short" is checked.
        assert sql.status == "completed" and sql.duration_s < 5.0
        labels, value = counters[run_id]
        assert value == pytest.approx(sql.energy_j, rel=1e-9), run_id
        assert estimates[run_id][1] == pytest.approx(sql.energy_j, rel=1e-9), run_id
        assert labels == {"run_id": run_id, "sweep": "test", "model": "resnet50", "nodes": "1"}
        (per_node,) = [
            v for k, v in got["parawatt_run_node_energy_joules_total"].items() if k == run_id
        ]
        assert per_node[0]["node"] == "node-x" and per_node[1] == pytest.approx(value, rel=1e-9)


def test_counter_never_goes_down_while_a_run_is_measured(finished):
    """Scrape repeatedly while a run is under way: the counter never shrinks (the estimate
    may), and it ends at the SQL figure."""
    collector, db_url = finished
    seen: list[float] = []

    def on_step(_):
        collector.pipeline._progress_ns = 0
        time.sleep(0.15)
        seen.append(scrape(collector.metrics_port)
                    .get("parawatt_run_energy_joules_total", {}).get("live", ({}, 0.0))[1])  # fmt: skip

    daemon = collector.config.daemons[0]
    run_job(daemon, "live", epochs=2, steps=3, step_s=0.05, ranks=(0, 1), on_step=on_step)
    assert wait_for_intervals(collector.engine, "live", "run", 2) == 2
    collector.flush()
    final = scrape(collector.metrics_port)["parawatt_run_energy_joules_total"]["live"][1]
    assert seen == sorted(seen) and final >= seen[-1]
    assert final == pytest.approx(run_summary(collector.engine, "live").energy_j, rel=1e-9)
