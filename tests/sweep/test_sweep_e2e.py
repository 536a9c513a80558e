"""A real small sweep on the CPU, end to end: sim daemon -> `trainer sweep` (torchrun, gloo,
1 and 2 processes x two GBS values x two repeats, tiny FourCastNet) -> `collector serve`
(SQLite) -> `collector report`; the report's numbers must agree with the database."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
GRID = """
[sweep]
name = "e2e"
model = "fourcastnet"
repeats = 2
[train]
data = "synthetic"
synthetic_size = 64
epochs = 1
steps_per_epoch = 3
img_height = 8
img_width = 16
in_channels = 2
out_channels = 2
patch_size = 4
embed_dim = 16
depth = 1
num_blocks = 2
eval_batches = 1
workers = 0
[[series]]
name = "cpu"
gpus = [1, 2]
gbs = [4, 8]
"""


def wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def collector(tmp_path, sim_daemon):
    """A real collector (the object `collector serve` runs) streaming from the sim daemon."""
    from collector.config import CollectorConfig
    from collector.service import create_collector

    url = f"sqlite:///{tmp_path / 'e2e.db'}"
    config = CollectorConfig(daemons=(sim_daemon.address,), db_url=url, metrics_listen=None)
    with create_collector(config) as running:
        yield url, running


def summaries(url):
    from collector.store.db import create_db_engine
    from collector.store.queries import run_summaries, step_energies

    engine = create_db_engine(url)
    try:
        runs = run_summaries(engine, sweep="e2e")
        return runs, {r.run_id: step_energies(engine, r.run_id) for r in runs}
    finally:
        engine.dispose()


def read_csv(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_cpu_sweep_through_daemon_collector_and_report(tmp_path, sim_daemon, collector):
    url, running_collector = collector
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out = tmp_path / "sweeps"
    cmd = [str(BIN / "trainer"), "sweep", str(grid), "--out", str(out)]
    cmd += ["--daemon", sim_daemon.address, "--max-local-procs", "2"]
    cmd += ["--cooldown", "200", "--cooldown-max-s", "1"]  # exercised; sim GPUs are cool
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    assert "8 completed, 0 failed" in sweep.stdout
    assert "cool-down: waited" in sweep.stdout

    state = json.loads((out / "e2e" / "state.json").read_text())["runs"]
    state_ids = {v["run_id"] for v in state.values()}
    assert len(state_ids) == 8 and all(v["status"] == "completed" for v in state.values())
    assert all(v["start_temperature_c"] for v in state.values())  # read from the daemon

    def all_measured():
        runs, steps = summaries(url)
        done = [r for r in runs if r.status == "completed" and r.energy_j and steps[r.run_id]]
        return (runs, steps) if len(done) == 8 else None

    runs, steps = wait_for(all_measured, 60, "the collector to store 8 measured runs")
    assert running_collector.flush(timeout_s=30)
    running_collector.close()  # flushes everything, as SIGTERM does for `collector serve`
    runs, steps = summaries(url)
    assert {r.run_id for r in runs} == state_ids
    assert all(r.start_temperature_c for r in runs)  # recorded with every run
    assert {(r.tags["point"], r.tags["repeat"]) for r in runs} == {
        (k.split("/")[0], k.split("/r")[1]) for k in state
    }

    from collector.cli import main as collector_cli
    from collector.report.build import report

    rep = tmp_path / "report"
    args = ["--sweep", "e2e", "--out", str(rep), "--db", url]
    if "report" in collector_cli.commands:  # `collector report`, once the CLI group has it
        result = CliRunner().invoke(collector_cli, ["report", *args])
    else:
        result = CliRunner().invoke(report, args)
    assert result.exit_code == 0, result.output
    assert "g2-l4-b8" in result.output

    # points.csv is tidy long format: one row per (point, metric) with n, mean and sample std
    long = {(r["point"], r["metric"]): r for r in read_csv(rep / "points.csv")}
    points = {pid: {m: r for (p, m), r in long.items() if p == pid} for pid, _ in long}
    assert set(points) == {"g1-l4-b4", "g2-l2-b4", "g1-l8-b8", "g2-l4-b8"}
    for pid, metric in points.items():
        mine = [r for r in runs if r.tags["point"] == pid]
        row = metric["energy_kwh"]
        assert row["runs"] == "2" and row["gpus"] == str(mine[0].world_size)
        assert row["gbs"] == str(mine[0].global_batch_size)
        assert row["lbs"] == str(mine[0].local_batch_size)
        kwh = [r.energy_j / 3.6e6 for r in mine]
        assert float(row["mean"]) == pytest.approx(sum(kwh) / 2, rel=1e-9)
        sample_std = abs(kwh[0] - kwh[1]) / 2**0.5
        assert float(row["std"]) == pytest.approx(sample_std, abs=1e-15)
        secs = [r.duration_s for r in mine]
        assert float(metric["runtime_s"]["mean"]) == pytest.approx(sum(secs) / 2, rel=1e-9)
        gpu_h = sum(r.gpu_hours for r in mine) / 2
        assert float(metric["gpu_hours"]["mean"]) == pytest.approx(gpu_h, rel=1e-9)
        samples = float(metric["samples"]["mean"])
        assert samples == mine[0].samples == 3 * mine[0].global_batch_size
        assert metric["rmse"]["mean"]  # FourCastNet's accuracy metric made it through
        temps = [sum(r.start_temperature_c.values()) / len(r.start_temperature_c) for r in mine]
        start_c = float(metric["start_temperature_c"]["mean"])
        assert start_c == pytest.approx(sum(temps) / 2)

    runs_csv = read_csv(rep / "runs.csv")  # long: one row per (run, metric)
    assert {r["run_id"] for r in runs_csv} == state_ids
    step_rows = {r["point"]: r for r in read_csv(rep / "step_energy.csv")}
    for pid, row in step_rows.items():
        pooled = [e for r in runs if r.tags["point"] == pid for e in steps[r.run_id]]
        assert int(row["steps"]) == len(pooled) == 6
        assert float(row["mean_j"]) == pytest.approx(sum(pooled) / len(pooled))
    series = {
        (r["series"], r["point"]): r
        for r in read_csv(rep / "series.csv")
        if r["metric"] == "speedup"
    }
    assert set(series) == {
        ("cpu-gbs4", "g1-l4-b4"),
        ("cpu-gbs4", "g2-l2-b4"),
        ("cpu-gbs8", "g1-l8-b8"),
        ("cpu-gbs8", "g2-l4-b8"),
    }
    assert float(series[("cpu-gbs8", "g1-l8-b8")]["value"]) == pytest.approx(1.0)
    fit = next(r for r in read_csv(rep / "fits.csv") if r["x"] == "gpu_hours")
    assert fit["model"] == "fourcastnet" and fit["n"] == "8"
    page = (rep / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 10  # every figure, the overview included
