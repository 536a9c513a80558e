"""A generated sbatch script, run on this machine with a stand-in `srun` that really starts one
copy of each step per "node" (two nodes on localhost): real power daemons (sim), the job-local
collector writing SQLite in the sweep directory, torchrun --nnodes 2 (gloo), then the report."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from collector.report.build import report
from collector.store.db import create_db_engine
from collector.store.queries import run_summaries
from tests.support.torchrun import REPO
from tests.sweep.test_sweep_slurm import FAKE_SRUN, SCONTROL
from trainer.sweep.grid import parse_grid
from trainer.sweep.slurm import write_slurm

pytestmark = pytest.mark.slow

TINY = """
[sweep]
name = "sl"
model = "fourcastnet"
[train]
data = "synthetic"
synthetic_size = 256
epochs = 2
steps_per_epoch = 8
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
[slurm]
gpus_per_node = 1
daemon_port = 0
daemon_backend = "sim"
collector_db = "parawatt.db"
drain_s = 3
python = "{python}"
rdzv_port = {rdzv}
[[series]]
name = "two-nodes"
gpus = [2]
gbs = 8
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_job_through_daemons_job_collector_and_report(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"srun": FAKE_SRUN, "scontrol": SCONTROL}.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    venv_bin = Path(sys.executable).parent
    grid = parse_grid(tomllib.loads(TINY.format(python=sys.executable, rdzv=free_port())))
    sweep_dir = tmp_path / "sl"
    write_slurm(grid, sweep_dir)
    (logs := tmp_path / "calls").mkdir()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{venv_bin}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "LOG_DIR": str(logs),
        "FAKE_HOSTS": "127.0.0.1 127.0.0.1",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "two-local-nodes",
        "SLURM_SUBMIT_DIR": str(sweep_dir / "slurm"),
        "OMP_NUM_THREADS": "1",
    }
    script = sweep_dir / "slurm" / f"{grid.points[0].point_id}.sbatch"
    proc = subprocess.run(["bash", str(script), "0"], env=env, cwd=sweep_dir / "slurm",
                          capture_output=True, text=True, timeout=400)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert (sweep_dir / "slurm" / "done" / f"{grid.points[0].point_id}.r0").exists()
    assert not (sweep_dir / "slurm" / "jobs" / "4242").exists()  # port files gone

    db = f"sqlite:///{sweep_dir / 'parawatt.db'}"
    engine = create_db_engine(db)
    try:
        (run,) = run_summaries(engine, sweep="sl")
    finally:
        engine.dispose()
    nonce = (sweep_dir / "slurm" / "run-id.nonce").read_text().strip()
    assert run.run_id == f"sl.{grid.points[0].point_id}.r0.{nonce}"
    assert run.status == "completed" and run.world_size == 2 and run.nodes == 2
    assert run.steps == 16 and run.energy_j and run.energy_j > 0
    assert "partial" not in run.flags

    out = tmp_path / "report"
    result = CliRunner().invoke(report, ["--sweep", "sl", "--out", str(out), "--db", db])
    assert result.exit_code == 0, result.output
    assert grid.points[0].point_id in result.output and (out / "points.csv").exists()
