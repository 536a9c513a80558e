"""The daemon's own /metrics: scraped live over HTTP, dcgm-exporter style labels, base units, and
accepted by `promtool check metrics`."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from power_daemon.config import DaemonConfig
from power_daemon.errors import ConfigError
from power_daemon.serve.metrics import metrics_address, start_metrics_server
from power_daemon.serve.server import create_server
from tests.support.torchrun import PYTHON, REPO


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


@pytest.fixture
def daemon():
    server, _ = create_server(
        DaemonConfig(
            listen="127.0.0.1:0", backend="sim", rapl="off", sim_devices=3, hostname="node-7"
        )
    )
    with server:
        server.start()
        metrics = start_metrics_server(server.core, "127.0.0.1:0", server.service.streams)
        try:
            yield server, metrics.port
        finally:
            metrics.close()


def test_live_scrape_has_device_series_with_dcgm_labels(daemon):
    server, port = daemon
    first = samples(scrape(port))
    time.sleep(0.3)  # the sim's energy counter advances every 100 ms
    text = scrape(port)
    got = samples(text)
    power = got["parawatt_device_power_watts"]
    assert len(power) == 3
    uuids = {d.uuid for d in server.core.devices}
    for s in power:
        assert s.labels["node"] == s.labels["hostname"] == "node-7"
        assert s.labels["uuid"] in uuids and s.labels["kind"] == "gpu"
        assert s.labels["model_name"].startswith("NVIDIA H100") and s.value > 0
    assert sorted(s.labels["gpu"] for s in power) == ["0", "1", "2"]
    for name in (
        "parawatt_device_temperature_celsius",
        "parawatt_device_sm_clock_hertz",
        "parawatt_device_utilization_ratio",
        "parawatt_device_memory_used_bytes",
        "parawatt_device_power_limit_watts",
        "parawatt_device_reading_age_seconds",
    ):
        assert len(got[name]) == 3, name
    assert all(s.value > 1e8 for s in got["parawatt_device_sm_clock_hertz"])  # Hz, not MHz
    assert all(0 <= s.value <= 1 for s in got["parawatt_device_utilization_ratio"])
    before = {s.labels["uuid"]: s.value for s in first["parawatt_device_energy_joules_total"]}
    after = {s.labels["uuid"]: s.value for s in got["parawatt_device_energy_joules_total"]}
    assert after.keys() == uuids and all(after[u] > before[u] for u in uuids)
    (info,) = got["parawatt_daemon_info"]
    assert info.labels["boot_id"] == server.core.boot_id and info.labels["backend"] == "sim"
    (lag,) = got["parawatt_daemon_sampling_lag_seconds"]
    assert 0 <= lag.value < 30 and lag.labels == {"node": "node-7"}
    assert got["parawatt_daemon_streams"][0].value == 0
    assert "# TYPE parawatt_device_energy_joules_total counter" in text
    assert not re.search(r"(step|epoch|run_id)=", text)


def test_promtool_accepts_the_exposition(daemon):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (scripts/setup.sh installs Debian's prometheus)")
    _, port = daemon
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=scrape(port), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_metrics_address_defaults_to_loopback_and_rejects_junk():
    assert metrics_address("9477") == ("127.0.0.1", 9477)
    assert metrics_address("0.0.0.0:9477") == ("0.0.0.0", 9477)
    assert metrics_address("[::1]:9477") == ("[::1]", 9477)
    for bad in ("", "host", "1.2.3.4:99999", "::1:9477"):
        with pytest.raises(ConfigError, match="--metrics-listen"):
            metrics_address(bad)


def test_cli_serves_metrics_and_refuses_a_taken_port(tmp_path):
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [PYTHON, "-m", "power_daemon", "serve", "--backend", "sim", "--no-rapl",
         "--listen", "127.0.0.1:0", "--port-file", str(port_file), "--metrics-listen", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = ""
        while "metrics on port" not in line:
            line = proc.stderr.readline()
            assert line, "daemon exited before serving /metrics"
        port = int(re.search(r"metrics on port (\d+)", line).group(1))
        assert "parawatt_device_power_watts{" in scrape(port)
        taken = subprocess.run(
            [PYTHON, "-m", "power_daemon", "serve", "--backend", "sim", "--no-rapl",
             "--listen", "127.0.0.1:0", "--metrics-listen", f"127.0.0.1:{port}"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert taken.returncode == 2
        assert "cannot serve metrics on 127.0.0.1:" in taken.stderr
        assert "Traceback" not in taken.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_cli_refuses_a_bad_metrics_address_in_one_line():
    proc = subprocess.run(
        [PYTHON, "-m", "power_daemon", "serve", "--backend", "sim", "--no-rapl",
         "--listen", "127.0.0.1:0", "--metrics-listen", "nowhere"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "power-daemon: error: --metrics-listen must be PORT, HOST:PORT or [v6]:PORT, not 'nowhere'"
    ]
