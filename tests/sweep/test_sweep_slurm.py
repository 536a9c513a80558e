"""SLURM scripts: well-formed bash, the right torchrun rendezvous flags, and a submit script that
skips finished and queued runs. The scripts are executed with stand-in srun/scontrol/sbatch/
power-daemon/python commands that record their arguments."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from trainer.sweep.grid import parse_grid
from trainer.sweep.slurm import point_script, shell_join, write_slurm

GRID = """
[sweep]
name = "rn"
model = "resnet50"
repeats = 2
[train]
data = "/data/imagenet dir/train"
epochs = 2
[slurm]
gpus_per_node = 4
partition = "gpu"
account = "proj"
time = "02:00:00"
setup = ["export SETUP_RAN=1"]
collector_db = "sqlite:////tmp/x.db"
drain_s = 0
[[series]]
name = "s"
gpus = [4, 8]
lbs = 32
"""

# srun [--options] CMD...: run CMD once per node (--nodes=N), here, as SLURM would set
# SLURM_NODEID and SLURMD_NODENAME; log the options; pass SIGTERM on to every copy.
FAKE_SRUN = """
opts=(); n=1
while [[ "$1" == --* ]]; do opts+=("$1"); [[ "$1" == --nodes=* ]] && n="${1#--nodes=}"; shift; done
echo "srun ${opts[*]} :: $1" >>"$LOG_DIR/srun.log"
pids=()
for i in $(seq 0 $((n - 1))); do SLURM_NODEID=$i SLURMD_NODENAME=node-$i "$@" & pids+=($!); done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
rc=0
for p in "${pids[@]}"; do
  while kill -0 "$p" 2>/dev/null; do wait "$p"; done  # a trapped signal ends a wait early
  r=0; wait "$p" 2>/dev/null || r=$?; [ "$r" = 0 ] || rc=$r  # the task's own exit status
done
exit "$rc"
"""
SCONTROL = """
if [ "$1" = show ]; then printf "%s\\n" ${FAKE_HOSTS:-node-a node-b}; else echo "$@" >>"$LOG_DIR/scontrol.log"; fi
"""

FAKES = {
    "srun": FAKE_SRUN,
    "scontrol": SCONTROL,
    "power-daemon": 'while [ $# -gt 0 ]; do [ "$1" = --port-file ] && echo 50051 >"$2"; shift; done\n'
    "exec sleep 30",
    "collector": 'echo "$@" >"$LOG_DIR/collector.args"\nexec sleep 30',
    # training: waits (briefly) for the background collector to have started, then records
    "python": 'for _ in $(seq 100); do [ -s "$LOG_DIR/collector.args" ] && break; sleep 0.05; done\n'
    'printf "%s\\n" "$@" >"$LOG_DIR/train.args"\necho "SETUP_RAN=$SETUP_RAN" >>"$LOG_DIR/train.env"\n'
    'cp "$SLURM_SUBMIT_DIR/inventory/$SLURM_JOB_ID.json" "$LOG_DIR/daemons.json" 2>/dev/null || true',
    "sbatch": 'echo "$@" >>"$LOG_DIR/sbatch.log"\necho 4242',
    "squeue": 'echo "pw-rn-g8-l32-b256-r1"',
}


@pytest.fixture
def fake_bin(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKES.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + body + "\n")
        path.chmod(0o755)
    logs = tmp_path / "calls"
    logs.mkdir()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG_DIR": str(logs),
        "SLURM_JOB_ID": "777",
        "SLURM_JOB_NODELIST": "node-[a-b]",
        "USER": "tester",
        "SLURM_SUBMIT_DIR": str(tmp_path / "rn" / "slurm"),
    }
    return env, logs


def load():
    return parse_grid(tomllib.loads(GRID))


def test_scripts_are_valid_bash(tmp_path):
    grid = load()
    paths = write_slurm(grid, tmp_path / "rn")
    assert [p.name for p in paths] == ["g4-l32-b128.sbatch", "g8-l32-b256.sbatch", "submit.sh"]
    for path in paths:
        subprocess.run(["bash", "-n", str(path)], check=True)


def test_two_node_script_header_and_rendezvous():
    grid = load()
    point = grid.points[1]
    text = point_script(grid, point)
    for line in [
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=32",  # 8 per GPU for the data loaders
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj",
        "#SBATCH --time=02:00:00",
        "#SBATCH --signal=B:USR1@120",
        "#SBATCH --requeue",
        "#SBATCH --output=logs/g8-l32-b256-%j.out",  # relative: submit.sh submits from slurm/
        "NNODES=2",
    ]:
        assert line in text.splitlines()
    assert "--exclusive" not in text and "--mem" not in text  # unless the grid asks
    assert "--rdzv-backend=c10d" in text and "--nproc-per-node=4" in text


def test_two_node_script_runs_daemons_collector_and_torchrun(tmp_path, fake_bin):
    env, logs = fake_bin
    grid = load()
    sweep_dir = tmp_path / "rn"
    write_slurm(grid, sweep_dir)
    script = sweep_dir / "slurm" / "g8-l32-b256.sbatch"
    proc = subprocess.run(
        ["bash", str(script), "1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    args = (logs / "train.args").read_text().splitlines()
    nonce = (sweep_dir / "slurm" / "run-id.nonce").read_text().strip()
    run_id = f"rn.g8-l32-b256.r1.{nonce}"  # no job id: the same in every attempt
    assert args[:9] == [
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc-per-node=4",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=node-a:29500",
        "--rdzv-id=777.0",
        "-m",
        "trainer",
    ]
    train = args[9:]

    def opt(name):
        return train[train.index(name) + 1]

    assert train[0] == "train"
    assert opt("--daemon") == "127.0.0.1:50051"
    assert opt("--run-id") == run_id
    assert opt("--checkpoint-dir") == str(sweep_dir / "checkpoints" / "g8-l32-b256.r1")
    assert opt("--data") == "/data/imagenet dir/train"  # quoting survived
    assert opt("--global-batch-size") == "256" and opt("--local-batch-size") == "32"
    assert [train[i + 1] for i, a in enumerate(train) if a == "--tag"] == [
        "sweep=rn",
        "point=g8-l32-b256",
        "repeat=1",
        "series=s",
        "scaling=strong",
    ]
    assert set((logs / "train.env").read_text().split()) == {"SETUP_RAN=1"}
    srun = (logs / "srun.log").read_text().splitlines()
    step = "srun --overlap --nodes=2 --ntasks-per-node=1 :: "
    assert srun == [step + "bash", step + "bash"]  # daemons, then training (node wrappers)
    collector = shlex.split((logs / "collector.args").read_text())
    assert collector == [
        "serve",
        "--daemon",
        "node-a:50051",
        "--daemon",
        "node-b:50051",
        "--db",
        "sqlite:////tmp/x.db",
        "--metrics-listen",
        "off",
    ]
    assert (sweep_dir / "slurm" / "done" / "g8-l32-b256.r1").exists()
    assert not (sweep_dir / "slurm" / "jobs" / "777").exists()  # port files removed on exit
    assert not (sweep_dir / "slurm" / "inventory" / "777.json").exists()
    # While it ran, the job's daemons were a file_sd target group (collector, Prometheus).
    assert json.loads((logs / "daemons.json").read_text()) == [
        {"targets": ["node-a:50051", "node-b:50051"], "labels": {"slurm_job_id": "777"}}
    ]


def test_failed_training_leaves_no_done_file(tmp_path, fake_bin):
    env, logs = fake_bin
    (Path(env["PATH"].split(":")[0]) / "python").write_text("#!/bin/bash\nexit 9\n")
    grid = load()
    write_slurm(grid, tmp_path / "rn")
    script = tmp_path / "rn" / "slurm" / "g4-l32-b128.sbatch"
    proc = subprocess.run(
        ["bash", str(script), "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 9
    assert not (tmp_path / "rn" / "slurm" / "done" / "g4-l32-b128.r0").exists()


def test_submit_skips_done_and_queued_runs(tmp_path, fake_bin):
    env, logs = fake_bin
    grid = load()
    write_slurm(grid, tmp_path / "rn")
    slurm = tmp_path / "rn" / "slurm"
    (slurm / "done").mkdir(exist_ok=True)
    (slurm / "done" / "g4-l32-b128.r0").touch()
    proc = subprocess.run(
        ["bash", str(slurm / "submit.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    submitted = (logs / "sbatch.log").read_text().splitlines()
    assert submitted == [
        "--parsable --job-name=pw-rn-g4-l32-b128-r1 g4-l32-b128.sbatch 1",
        "--parsable --job-name=pw-rn-g8-l32-b256-r0 g8-l32-b256.sbatch 0",
    ]
    assert "done:   g4-l32-b128 repeat 0" in proc.stdout
    assert "queued: g8-l32-b256 repeat 1" in proc.stdout


def test_shell_join_quotes_and_expands_placeholders():
    joined = shell_join(["a b", "repeat=@REPEAT@", "--x=@HEAD@:@RDZV_PORT@", ""])
    out = subprocess.run(
        [
            "bash",
            "-c",
            f'REPEAT=3 HEAD=h RDZV_PORT=9; REPEAT=3; HEAD=h; RDZV_PORT=9; printf "%s|" {joined}',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "a b|repeat=3|--x=h:9||"
