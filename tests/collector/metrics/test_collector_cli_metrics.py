"""One short job through sim daemon + collector, then /metrics (promtool) and the CLI tables."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import time
import urllib.request

import pytest
from click.testing import CliRunner

from collector.cli import main
from collector.config import CollectorConfig
from collector.service import create_collector
from power_daemon.config import DaemonConfig
from power_daemon.serve.server import create_server
from tests.collector.drive import run_job, wait_for_intervals


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    daemon, port = create_server(DaemonConfig(listen="127.0.0.1:0", backend="sim", rapl="off"))
    daemon.start()
    db_url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'p.db'}"
    cfg = CollectorConfig(daemons=(f"127.0.0.1:{port}",), db_url=db_url,
                          metrics_listen="127.0.0.1:0", late_bound_s=1.0, flush_interval_s=0.1)  # fmt: skip
    collector = create_collector(cfg).start()
    run_job(f"127.0.0.1:{port}", "cli-run", epochs=2, steps=2, step_s=0.1, ranks=(0, 1))
    assert wait_for_intervals(collector.engine, "cli-run", "run", 2) == 2
    collector.flush()
    yield collector, db_url
    collector.close()
    daemon.close()


def scrape(collector) -> str:
    url = f"http://127.0.0.1:{collector.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


EXPECTED_SERIES = (
    "parawatt_device_power_watts{",
    "parawatt_device_energy_joules_total{",
    "parawatt_device_temperature_celsius{",
    "parawatt_device_sm_clock_hertz{",
    'parawatt_run_energy_joules_total{model="resnet50",nodes="1",run_id="cli-run",sweep="test"}',
    'parawatt_step_duration_seconds_count{model="resnet50",nodes="1",run_id="cli-run",'
    'sweep="test"} 8.0',
    "parawatt_daemon_up{",
    "parawatt_stream_lag_seconds{",
    "parawatt_readings_ingested_total{",
    "parawatt_db_write_duration_seconds_bucket",
)


def test_exposition_has_device_run_and_health_series(collected):
    collector, _ = collected
    # the run's progress is refreshed at the collector's next poll after this, which a loaded
    # machine may delay past one flush: wait for the series (failed once in a full local run)
    deadline = time.monotonic() + 30.0
    while True:
        collector.pipeline._progress_ns = 0  # refresh run progress on the next poll
        collector.flush()
        text = scrape(collector)
        if all(name in text for name in EXPECTED_SERIES) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for name in EXPECTED_SERIES:
        assert name in text, name
    assert "step=" not in text and "epoch=" not in text  # bounded labels only
    lines = text.splitlines()
    energy = next(x for x in lines if x.startswith("parawatt_run_energy_joules_total"))
    assert float(energy.split()[-1]) > 0


def test_promtool_accepts_the_exposition(collected):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing (Debian package prometheus; scripts/setup.sh installs it)")
    text = scrape(collected[0])
    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=30)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


def test_runs_table_json_csv(collected):
    _, db_url = collected
    runner = CliRunner()
    table = runner.invoke(main, ["runs", "--db", db_url])
    assert table.exit_code == 0, table.output
    assert "cli-run" in table.output and "J/sample" in table.output
    rows = json.loads(runner.invoke(main, ["runs", "--db", db_url, "--format", "json"]).output)
    (run,) = rows
    assert run["world_size"] == 2 and run["steps"] == 4 and run["epochs"] == 2
    assert run["energy_j"] > 0 and run["j_per_sample"] == pytest.approx(run["energy_j"] / 64)
    assert run["status"] == "completed" and run["tags"] == {"sweep": "test"}
    (row,) = list(
        csv.DictReader(
            io.StringIO(runner.invoke(main, ["runs", "--db", db_url, "--format", "csv"]).output)
        )
    )
    assert row["run_id"] == "cli-run" and float(row["energy_j"]) == pytest.approx(run["energy_j"])


def test_runs_of_an_unknown_sweep_say_so(collected):
    _, db_url = collected
    res = CliRunner().invoke(main, ["runs", "--db", db_url, "--sweep", "nosuch"])
    assert res.exit_code == 0 and "no runs tagged sweep=nosuch" in res.output
    res = CliRunner().invoke(main, ["runs", "--db", db_url, "--sweep", "test"])
    assert "cli-run" in res.output


def test_report_into_an_unwritable_directory_gives_one_line(collected, tmp_path):
    _, db_url = collected
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "report"
    res = CliRunner().invoke(main, ["report", "--sweep", "test", "--out", str(out), "--db", db_url])
    assert res.exit_code == 1 and f"cannot write the report to {out}" in res.output, res.output
    assert "Traceback" not in res.output


def test_show_table_json_csv(collected):
    _, db_url = collected
    runner = CliRunner()
    out = runner.invoke(main, ["show", "cli-run", "--db", db_url])
    assert out.exit_code == 0 and "avg W" in out.output and "top1_error=0.8" in out.output
    data = json.loads(
        runner.invoke(main, ["show", "cli-run", "--db", db_url, "--format", "json"]).output
    )
    assert [e["epoch"] for e in data["epochs"]] == [0, 1]
    assert all(e["energy_j"] > 0 and e["steps"] == 2 for e in data["epochs"])
    assert sum(e["energy_j"] for e in data["epochs"]) < data["run"]["energy_j"]
    text = runner.invoke(main, ["show", "cli-run", "--db", db_url, "--format", "csv"]).output
    run_csv, epoch_csv = text.strip().split("\n\n")
    assert len(list(csv.DictReader(io.StringIO(epoch_csv)))) == 2


def test_user_mistakes_give_one_line_and_status_1(collected, tmp_path):
    _, db_url = collected
    runner = CliRunner()
    for args, text in (
        (["show", "no-such-run", "--db", db_url], "no run 'no-such-run'"),
        (["runs", "--db", f"sqlite:///{tmp_path}/missing.db"], "no database file"),
        (["runs", "--db", "mysql://x/y"], "unsupported database"),
        (["runs", "--db", "postgresql+psycopg://postgres@127.0.0.1:1/x"], "database error"),
    ):
        res = runner.invoke(main, args)
        assert res.exit_code == 1 and text in res.output and "Traceback" not in res.output
