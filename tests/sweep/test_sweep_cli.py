"""`trainer sweep` on the command line: up-front refusal, dry run, SLURM output, clean errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from trainer.sweep.command import sweep

GRID = """
[sweep]
name = "cli"
model = "fourcastnet"
repeats = 2
[train]
data = "synthetic"
[[series]]
name = "s"
gpus = [1, 2]
gbs = 4
"""


def invoke(tmp_path, *args, grid=GRID):
    path = tmp_path / "grid.toml"
    path.write_text(grid)
    out = tmp_path / "out"
    result = CliRunner().invoke(sweep, [str(path), "--out", str(out), "--daemon", "none", *args])
    return result, out


def test_grid_too_big_for_this_machine_is_refused_before_anything_starts(tmp_path):
    result, out = invoke(tmp_path, "--max-local-procs", "1")
    assert result.exit_code == 1
    assert "sweep cli cannot run:" in result.output
    assert "point g2-l2-b4 (series s): needs 2 processes but this machine allows 1" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_indivisible_gbs_and_unknown_model_are_refused(tmp_path):
    grid = GRID.replace('"fourcastnet"', '"gpt2"').replace("gbs = 4", "gbs = 3")
    result, out = invoke(tmp_path, "--max-local-procs", "2", grid=grid)
    assert result.exit_code == 1
    assert "unknown model 'gpt2'" in result.output
    assert "GBS 3 is not divisible by LBS 1 x 2 GPUs" in result.output
    assert not out.exists()


def test_bad_toml_is_one_clear_message(tmp_path):
    result, _ = invoke(tmp_path, grid="[sweep\n")
    assert result.exit_code == 1
    assert "invalid TOML" in result.output and "Traceback" not in result.output


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    result, out = invoke(tmp_path, "--max-local-procs", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    assert (
        "sweep cli: model fourcastnet, 2 point(s) x 2 repeat(s) = 4 run(s), 4 to run"
        in result.output
    )
    assert "g2-l2-b4" in result.output and "torch.distributed.run" in result.output
    assert not out.exists()


def test_slurm_writes_scripts_without_a_local_capacity_check(tmp_path):
    grid = GRID.replace("gpus = [1, 2]", "gpus = [4, 8]").replace("gbs = 4", "gbs = 64")
    result, out = invoke(tmp_path, "--slurm", "--no-collector", "--max-local-procs", "1", grid=grid)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (out / "cli" / "slurm").iterdir())
    assert names == ["g4-l16-b64.sbatch", "g8-l8-b64.sbatch", "logs", "run-id.nonce", "submit.sh"]
    assert "submit with: bash" in result.output


def test_cooldown_without_daemon_is_refused(tmp_path):
    result, _ = invoke(tmp_path, "--max-local-procs", "2", "--cooldown", "5")
    assert result.exit_code == 1
    assert "--cooldown needs a power daemon" in result.output


def test_typo_in_a_trainer_flag_is_refused_against_the_real_trainer_options(tmp_path):
    grid = GRID.replace('data = "synthetic"', 'data = "synthetic"\nimg_hieght = 8')
    result, out = invoke(tmp_path, "--max-local-procs", "2", "--dry-run", grid=grid)
    assert result.exit_code == 1
    assert "flag 'img_hieght' is not a `trainer train` option" in result.output


@pytest.mark.slow
def test_sigterm_stops_the_running_point_and_records_it_interrupted(tmp_path):
    """The sweep runs a stand-in `python` that sleeps; SIGTERM must not leave it orphaned."""
    fake = tmp_path / "python"
    pid_file = tmp_path / "child.pid"
    fake.write_text(f"#!/bin/bash\necho $$ >{pid_file}\nexec sleep 120\n")
    fake.chmod(0o755)
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "trainer", "sweep", str(grid), "--out", str(out)]
    cmd += ["--daemon", "none", "--max-local-procs", "2", "--python", str(fake)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted; run the same command again" in output
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    state = json.loads((out / "cli" / "state.json").read_text())["runs"]
    assert state["g1-l4-b4/r0"]["status"] == "interrupted"
