"""SLURM grid options and the time-limit flow: a job told of its time limit (USR1) stops
training, requeues itself, and the next attempt resumes under the same run id from the point's
checkpoint directory. Run with the stand-in commands of test_sweep_slurm."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.sweep.test_sweep_slurm import GRID, fake_bin  # noqa: F401 (a fixture)
from trainer.sweep.command import sweep
from trainer.sweep.grid import GridError, parse_grid
from trainer.sweep.slurm import point_script, slurm_problems, write_slurm

# Training that runs until SIGTERM, as the trainer does: a clean stop, exit 143.
SLOW_PYTHON = """#!/bin/bash
trap 'echo stopped >>"$LOG_DIR/train.stopped"; exit 143' TERM
printf "%s\\n" "$@" >"$LOG_DIR/train.args.$$"  # one file per fake node: no interleaving
echo started >>"$LOG_DIR/train.started"
while true; do sleep 0.05; done
"""


def grid_with(**slurm) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in slurm.items())
    return GRID.replace("[slurm]\n", "[slurm]\n" + extra)


def test_grid_options_shape_the_header():
    grid = parse_grid(tomllib.loads(grid_with(
        exclusive="true", gpu_request='"gres"', gres_type='"a100"', cpus_per_gpu=12,
        requeue="false", nccl_timeout_s=300,
    )))  # fmt: skip
    text = point_script(grid, grid.points[0]).splitlines()
    for line in ("#SBATCH --exclusive", "#SBATCH --mem=0", "#SBATCH --gres=gpu:a100:4",
                 "#SBATCH --cpus-per-task=48", "export PARAWATT_DIST_TIMEOUT_S=300"):  # fmt: skip
        assert line in text, line
    assert not any(x.startswith(("#SBATCH --gpus-per-node", "#SBATCH --signal")) for x in text)
    grid = parse_grid(tomllib.loads(grid_with(mem='"200G"', cpus_per_task=10)))
    text = point_script(grid, grid.points[0]).splitlines()
    assert "#SBATCH --mem=200G" in text and "#SBATCH --cpus-per-task=10" in text


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ('gpu_request = "gpus"', "gpu_request must be one of"),
        ("exclusive = 1", "exclusive must be true or false"),
        ("daemon_port = 70000", "daemon_port must be a port number"),
        ("cpus_per_gpu = 0", "cpus_per_gpu must be a positive integer"),
        ("mem = 0", "mem must be a string"),
    ],
)
def test_bad_slurm_options_are_refused(option, message):
    with pytest.raises(GridError, match=message):
        parse_grid(tomllib.loads(GRID.replace("[slurm]\n", f"[slurm]\n{option}\n")))


def test_a_grid_whose_runs_would_store_nowhere_is_refused(tmp_path):
    no_db = GRID.replace('collector_db = "sqlite:////tmp/x.db"\n', "")
    assert slurm_problems(parse_grid(tomllib.loads(no_db)))
    assert not slurm_problems(parse_grid(tomllib.loads(no_db)), no_collector=True)
    cluster = no_db.replace("[slurm]\n", "[slurm]\ncluster_collector = true\n")
    assert not slurm_problems(parse_grid(tomllib.loads(cluster)))
    grid_file = tmp_path / "g.toml"
    grid_file.write_text(no_db)
    args = [str(grid_file), "--out", str(tmp_path / "out"), "--slurm"]
    refused = CliRunner().invoke(sweep, args)
    assert refused.exit_code == 1 and "read by no collector" in refused.output
    assert "Traceback" not in refused.output and not (tmp_path / "out").exists()
    allowed = CliRunner().invoke(sweep, [*args, "--no-collector"])
    assert allowed.exit_code == 0, allowed.output


def test_relative_collector_db_lives_in_the_sweep_directory(tmp_path, fake_bin):  # noqa: F811
    env, logs = fake_bin
    grid = parse_grid(tomllib.loads(GRID.replace('"sqlite:////tmp/x.db"', '"db/parawatt.db"')))
    write_slurm(grid, tmp_path / "rn")
    proc = subprocess.run(["bash", str(tmp_path / "rn" / "slurm" / "g4-l32-b128.sbatch"), "0"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    args = shlex.split((logs / "collector.args").read_text())
    assert args[args.index("--db") + 1] == f"sqlite:///{tmp_path / 'rn'}/db/parawatt.db"


def test_daemon_metrics_port_reaches_the_daemons_and_the_inventory(tmp_path, fake_bin):  # noqa: F811
    env, logs = fake_bin
    bin_dir = Path(env["PATH"].split(":")[0])
    (bin_dir / "power-daemon").write_text(
        '#!/bin/bash\necho "$@" >>"$LOG_DIR/daemon.args"\n'
        'while [ $# -gt 0 ]; do [ "$1" = --port-file ] && echo 50051 >"$2"; shift; done\n'
        "exec sleep 30\n"
    )
    grid = parse_grid(tomllib.loads(grid_with(daemon_metrics_port=9477)))
    write_slurm(grid, tmp_path / "rn")
    proc = subprocess.run(["bash", str(tmp_path / "rn" / "slurm" / "g8-l32-b256.sbatch"), "0"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for line in (logs / "daemon.args").read_text().splitlines():  # one per node
        args = line.split()
        assert args[args.index("--metrics-listen") + 1] == "0.0.0.0:9477"
        assert args[args.index("--hostname") + 1] in ("node-0", "node-1")
    (group,) = json.loads((logs / "daemons.json").read_text())
    assert group["labels"] == {"slurm_job_id": "777", "__metrics_port": "9477"}


def _node_args(logs: Path) -> list[str]:
    """One fake node's trainer arguments (both nodes get the same ones), then clear them all."""
    files = sorted(logs.glob("train.args.*"))
    assert len(files) == 2, files
    args = files[0].read_text().splitlines()
    for f in files:
        f.unlink()
    return args


def test_time_limit_requeues_and_the_next_attempt_resumes_the_same_run(tmp_path, fake_bin):  # noqa: F811
    env, logs = fake_bin
    bin_dir = Path(env["PATH"].split(":")[0])
    (bin_dir / "python").write_text(SLOW_PYTHON)
    grid = parse_grid(tomllib.loads(GRID))
    sweep_dir = tmp_path / "rn"
    write_slurm(grid, sweep_dir)
    script = str(sweep_dir / "slurm" / "g8-l32-b256.sbatch")
    job = subprocess.Popen(["bash", script, "1"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while (
        not (logs / "train.started").exists()
        or len((logs / "train.started").read_text().split()) < 2
    ):  # both nodes train
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGUSR1)  # what --signal=B:USR1@120 does
    out, err = job.communicate(timeout=60)
    assert job.returncode == 0, err
    assert "time limit near" in err
    assert (logs / "train.stopped").read_text().split() == ["stopped", "stopped"]
    assert (logs / "scontrol.log").read_text().split() == ["requeue", "777"]
    assert not (sweep_dir / "slurm" / "done" / "g8-l32-b256.r1").exists()
    first = _node_args(logs)
    (bin_dir / "python").write_text('#!/bin/bash\nprintf "%s\\n" "$@" >"$LOG_DIR/train.args.$$"\n')
    again = subprocess.run(["bash", script, "1"], env={**env, "SLURM_RESTART_COUNT": "1"},
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0, again.stderr
    second = _node_args(logs)

    def opt(args, name):
        return args[args.index(name) + 1]

    for name in ("--run-id", "--checkpoint-dir"):
        assert opt(first, name) == opt(second, name)
    assert "--rdzv-id=777.0" in first and "--rdzv-id=777.1" in second  # a fresh rendezvous
    assert (sweep_dir / "slurm" / "done" / "g8-l32-b256.r1").exists()


@pytest.mark.parametrize(
    ("value", "seconds"), [("300", 300.0), ("", 1800.0), ("junk", 1800.0), ("-5", 1800.0)]
)
def test_nccl_timeout_reaches_the_process_group(monkeypatch, value, seconds):
    from trainer.train.distributed import _collective_timeout

    monkeypatch.setenv("PARAWATT_DIST_TIMEOUT_S", value)
    assert _collective_timeout().total_seconds() == seconds


def test_a_killed_attempts_port_files_are_not_taken_for_the_new_daemons(tmp_path, fake_bin):  # noqa: F811
    env, logs = fake_bin
    grid = parse_grid(tomllib.loads(GRID))
    write_slurm(grid, tmp_path / "rn")
    stale = tmp_path / "rn" / "slurm" / "jobs" / "777"
    stale.mkdir(parents=True)
    for i in (0, 1):  # SIGKILLed before its daemons could remove them; the job id stays
        (stale / f"daemon-{i}.port").write_text("1111\n")
    proc = subprocess.run(["bash", str(tmp_path / "rn" / "slurm" / "g8-l32-b256.sbatch"), "0"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    args = shlex.split((logs / "collector.args").read_text())
    assert [args[i + 1] for i, a in enumerate(args) if a == "--daemon"] == [
        "node-a:50051",
        "node-b:50051",
    ]


def test_a_signal_after_training_completed_marks_the_point_done_without_requeue(tmp_path, fake_bin):  # noqa: F811
    env, logs = fake_bin
    bin_dir = Path(env["PATH"].split(":")[0])
    # training that completes (exit 0) just as the time-limit signal comes
    (bin_dir / "python").write_text(SLOW_PYTHON.replace("exit 143", "exit 0"))
    grid = parse_grid(tomllib.loads(GRID))
    sweep_dir = tmp_path / "rn"
    write_slurm(grid, sweep_dir)
    job = subprocess.Popen(["bash", str(sweep_dir / "slurm" / "g8-l32-b256.sbatch"), "1"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while (
        not (logs / "train.started").exists()
        or len((logs / "train.started").read_text().split()) < 2
    ):
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGUSR1)
    out, err = job.communicate(timeout=60)
    assert job.returncode == 0, err
    assert not (logs / "scontrol.log").exists()  # nothing left to resume: no requeue
    assert (sweep_dir / "slurm" / "done" / "g8-l32-b256.r1").exists()
