"""The Grafana dashboard's queries and the alert rules, run by a real Prometheus (Debian's
package, installed by scripts/setup.sh) scraping a live collector fed by a sim daemon, and the
daemon's own /metrics found through a file_sd inventory, as deployed.

Grafana itself cannot be installed here; what it would send to Prometheus is checked instead.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from collector.config import CollectorConfig
from collector.service import create_collector
from power_daemon.config import DaemonConfig
from power_daemon.serve.metrics import start_metrics_server
from power_daemon.serve.server import create_server
from tests.collector.drive import run_job
from tests.deploy.test_deploy_files import DEPLOY, dashboard, dashboard_queries, expand

pytestmark = pytest.mark.slow

# Panels that must show data once one short job has run (the rest may legitimately be empty,
# e.g. "lost readings" when nothing was lost).
MUST_HAVE_DATA = {
    "GPU power (top 20)",
    "GPU power per node (min / mean / max)",
    "Node power (GPU + CPU + DRAM)",
    "Energy rate from the counters",
    "GPU temperature (hottest 20)",
    "GPU utilization (least busy 20)",
    "Run energy",
    "Sweep energy (completed sessions)",
    "Run progress (step)",
    "Step duration p50 / p95",
    "Daemons up",
    "Sampling lag",
    "Stream lag",
    "Readings ingested per second",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, path: str, **params) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    binary = shutil.which("prometheus")
    if not binary:
        pytest.skip("prometheus not installed (scripts/setup.sh installs Debian's package)")
    tmp = tmp_path_factory.mktemp("prom")
    daemon, daemon_port = create_server(
        DaemonConfig(listen="127.0.0.1:0", backend="sim", rapl="off")
    )
    daemon.start()
    daemon_metrics = start_metrics_server(daemon.core, "127.0.0.1:0")
    address = f"127.0.0.1:{daemon_port}"
    cfg = CollectorConfig(daemons=(address,), db_url=f"sqlite:///{tmp / 'p.db'}",
                          metrics_listen="127.0.0.1:0", late_bound_s=1.0, flush_interval_s=0.1)  # fmt: skip
    collector = create_collector(cfg).start()
    # The deployed config and rules, pointed at this collector and scraping every second.
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    config = config.replace("collector:9464", f"127.0.0.1:{collector.metrics_port}")
    config = config.replace("scrape_interval: 5s", "scrape_interval: 1s")
    config = config.replace("evaluation_interval: 15s", "evaluation_interval: 1s")
    (tmp / "prometheus.yml").write_text(config)
    # The inventory lists the daemon's gRPC address, as the collector's; /metrics is elsewhere.
    (tmp / "daemons").mkdir()
    inventory = [{"targets": [address], "labels": {"__metrics_port": str(daemon_metrics.port)}}]
    (tmp / "daemons" / "nodes.json").write_text(json.dumps(inventory))
    shutil.copy(DEPLOY / "prometheus" / "rules.yml", tmp / "rules.yml")
    port = free_port()
    log = open(tmp / "prometheus.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        run_job(address, "dash-run", epochs=2, steps=4, step_s=0.3, ranks=(0, 1))
        collector.flush()
        _wait_for_target(port, proc, tmp / "prometheus.log")
        time.sleep(3)  # rate()/increase() need a few scrapes
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        collector.close()
        daemon_metrics.close()
        daemon.close()


def _wait_for_target(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            result = api(port, "query", query='up{job=~"parawatt-.*"} == 1')["data"]["result"]
            if len(result) == 2:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError("Prometheus never scraped collector and daemon:\n" + log.read_text())


def test_every_dashboard_query_runs(prometheus: int) -> None:
    empty = []
    for title, expr in dashboard_queries():
        answer = api(prometheus, "query", query=expr)
        assert answer["status"] == "success", (title, expr, answer)
        if not answer["data"]["result"] and title in MUST_HAVE_DATA:
            empty.append((title, expr))
    assert not empty, f"panels without data after a job ran: {empty}"


def test_run_energy_panel_shows_the_job(prometheus: int) -> None:
    result = api(prometheus, "query", query="parawatt_run_energy_joules_total / 3.6e6")
    runs = {r["metric"]["run_id"]: float(r["value"][1]) for r in result["data"]["result"]}
    assert runs.get("dash-run", 0) > 0


def test_alert_rules_evaluate_cleanly(prometheus: int) -> None:
    groups = api(prometheus, "rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 17
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    firing = [r["name"] for r in rules if r["type"] == "alerting" and r["state"] != "inactive"]
    assert firing == []  # a healthy collector fires nothing


def test_daemon_is_scraped_through_the_inventory_and_joins_the_collector(prometheus: int) -> None:
    (up,) = api(prometheus, "query", query='up{job="parawatt-daemon"}')["data"]["result"]
    assert up["value"][1] == "1"
    gpus = api(prometheus, "query", query='parawatt_device_power_watts{uuid!=""}')["data"]
    assert len(gpus["result"]) == 2 and all(r["metric"]["node"] for r in gpus["result"])
    # One node label across the daemon's device series and the collector's daemon series.
    joined = 'parawatt_daemon_up * on (node) group_left () max by (node) (parawatt_device_power_watts{uuid!=""})'
    assert api(prometheus, "query", query=joined)["data"]["result"]
    run_on_node = (
        'parawatt_run_node_energy_joules_total{run_id="dash-run"} * on (node) group_left () '
        'max by (node) (parawatt_device_power_watts{uuid!=""})'
    )
    assert api(prometheus, "query", query=run_on_node)["data"]["result"]
    # The rules take each GPU once, though the collector exports it too.
    per_gpu = api(prometheus, "query", query="count by (node, uuid) (parawatt:gpu_power_watts)")
    assert [r["value"][1] for r in per_gpu["data"]["result"]] == ["1", "1"]


def test_template_variables_have_values(prometheus: int) -> None:
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
        match, label = expand(m.group(1)), m.group(2)
        values = api(prometheus, f"label/{label}/values", **{"match[]": match})["data"]
        assert values, var["name"]
