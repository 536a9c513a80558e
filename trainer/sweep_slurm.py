"""SLURM scripts for a sweep: one sbatch script per point plus a submit script (pure text).

Each job starts one power daemon per node (srun, one task per node) and waits until every one
listens, optionally a collector on the batch host subscribed to all of them, then runs torchrun on
every node with c10d rendezvous at the first node. The ranks send markers to their node's daemon on
127.0.0.1. A job that finishes training leaves `done/<point>.r<repeat>`; `submit.sh` skips those and
any (point, repeat) still queued, so re-running it retries exactly the failed runs.
"""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

from trainer.sweep_grid import Point, SweepGrid
from trainer.sweep_runner import train_args

# Placeholders in generated arguments that become shell expansions in the script.
_VARS = {
    "@REPEAT@": "${REPEAT}",
    "@RUN_ID@": "${RUN_ID}",
    "@NNODES@": "${NNODES}",
    "@HEAD@": "${HEAD}",
    "@RDZV_PORT@": "${RDZV_PORT}",
    "@DAEMON@": "127.0.0.1:${DAEMON_PORT}",
}
_WAIT_PORT_FILE = (
    'for _ in $(seq 1 300); do [ -s "$0" ] && exit 0; sleep 0.2; done; '
    'echo "power-daemon did not start on $(hostname)" >&2; exit 1'
)


def nodes_for(point: Point, gpus_per_node: int) -> tuple[int, int]:
    """(nodes, processes per node) for a SLURM allocation."""
    if point.gpus <= gpus_per_node:
        return 1, point.gpus
    return math.ceil(point.gpus / gpus_per_node), gpus_per_node


def job_name(grid: SweepGrid, point: Point) -> str:
    return f"pw-{grid.name}-{point.point_id}"


def shell_join(args: list[str]) -> str:
    """Quotes arguments for bash, turning the _VARS placeholders into quoted expansions."""
    out = []
    for arg in args:
        parts = re.split("(" + "|".join(map(re.escape, _VARS)) + ")", arg)
        out.append(
            "".join(f'"{_VARS[p]}"' if p in _VARS else shlex.quote(p) for p in parts if p) or "''"
        )
    return " ".join(out)


def point_script(grid: SweepGrid, point: Point, sweep_dir: Path) -> str:
    opts = grid.slurm
    nodes, per_node = nodes_for(point, opts.gpus_per_node)
    sweep_dir = sweep_dir.resolve()
    lines = [
        "#!/bin/bash",
        f"# parawatt sweep {grid.name}, point {point.point_id}: {point.gpus} GPU(s) on {nodes} "
        f"node(s), GBS {point.global_batch_size}, LBS {point.local_batch_size}, "
        f"series {', '.join(point.series)}",
        "# Submit with submit.sh, or by hand: sbatch --job-name=NAME-rREPEAT THIS_FILE REPEAT",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={per_node}",
        f"#SBATCH --time={opts.time}",
        f"#SBATCH --output={sweep_dir / 'slurm' / 'logs'}/{point.point_id}-%j.out",
    ]
    if opts.partition:
        lines.append(f"#SBATCH --partition={opts.partition}")
    if opts.account:
        lines.append(f"#SBATCH --account={opts.account}")
    if opts.cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={opts.cpus_per_task}")
    if opts.exclusive:
        lines.append("#SBATCH --exclusive")
    lines += [f"#SBATCH {extra}" for extra in opts.sbatch]
    lines += ["set -euo pipefail", 'REPEAT="${1:?usage: sbatch SCRIPT REPEAT}"', *opts.setup]
    lines += [
        f"SWEEP_DIR={shlex.quote(str(sweep_dir))}",
        f"NNODES={nodes}",
        # No `| head -n 1`: under pipefail, scontrol's SIGPIPE would fail the job.
        'mapfile -t HOSTS < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        'HEAD="${HOSTS[0]}"',
        f"RDZV_PORT={opts.rdzv_port}",
        f"DAEMON_PORT={opts.daemon_port}",
        f'RUN_ID="{grid.name}.{point.point_id}.r${{REPEAT}}.${{SLURM_JOB_ID}}"',
        'PORT_FILE="/tmp/parawatt-daemon-${SLURM_JOB_ID}.port"',
        "daemon_pid=''; collector_pid=''",
        "stop() {",
        '  if [ -n "$collector_pid" ]; then kill -TERM "$collector_pid" 2>/dev/null || true; '
        'wait "$collector_pid" || true; fi',
        '  if [ -n "$daemon_pid" ]; then kill -TERM "$daemon_pid" 2>/dev/null || true; '
        'wait "$daemon_pid" || true; fi',
        "}",
        "trap stop EXIT",
    ]
    step = 'srun --overlap --nodes="$NNODES" --ntasks-per-node=1'
    if opts.start_daemons:
        lines += [
            "# One power daemon per node: the collector reaches it on DAEMON_PORT, the ranks on "
            "127.0.0.1.",
            f'{step} power-daemon serve --listen "0.0.0.0:${{DAEMON_PORT}}" '
            f'--backend {shlex.quote(opts.daemon_backend)} --port-file "$PORT_FILE" &',
            "daemon_pid=$!",
            f'{step} bash -c {shlex.quote(_WAIT_PORT_FILE)} "$PORT_FILE"',
        ]
    if opts.collector_db:
        lines += [
            "daemons=()",
            'for host in "${HOSTS[@]}"; do daemons+=(--daemon "${host}:${DAEMON_PORT}"); done',
            f'collector serve "${{daemons[@]}}" --db {shlex.quote(opts.collector_db)} '
            "--metrics-listen off &",
            "collector_pid=$!",
        ]
    torchrun = [
        opts.python,
        "-m",
        "torch.distributed.run",
        "--nnodes=@NNODES@",
        f"--nproc-per-node={per_node}",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=@HEAD@:@RDZV_PORT@",
        "--rdzv-id=@RUN_ID@",
        "-m",
        "trainer",
    ]
    train = train_args(grid, point, repeat="@REPEAT@", run_id="@RUN_ID@", daemon="@DAEMON@")
    cmd = shell_join(torchrun + train)
    lines += [
        f"{step} {cmd}",
        'mkdir -p "$SWEEP_DIR/slurm/done"',
        f'touch "$SWEEP_DIR/slurm/done/{point.point_id}.r${{REPEAT}}"',
    ]
    if opts.collector_db:
        lines.append(f"sleep {opts.drain_s:g}  # let the collector catch up before it stops")
    return "\n".join(lines) + "\n"


def submit_script(grid: SweepGrid) -> str:
    lines = [
        "#!/bin/bash",
        f"# Submits every run of sweep {grid.name} that has neither completed nor is queued;",
        "# re-run it to retry the failed ones.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "mkdir -p logs done",
        f"REPEATS={grid.repeats}",
        'queued=$(squeue -h -u "$USER" -o %j 2>/dev/null || true)',
        "submit() {  # submit SCRIPT POINT_ID JOB_NAME",
        "  for r in $(seq 0 $((REPEATS - 1))); do",
        '    if [ -e "done/$2.r$r" ]; then echo "done:   $2 repeat $r"; continue; fi',
        '    if grep -qxF "$3-r$r" <<<"$queued"; then echo "queued: $2 repeat $r"; continue; fi',
        '    echo "submit: $2 repeat $r -> job $(sbatch --parsable --job-name="$3-r$r" "$1" "$r")"',
        "  done",
        "}",
    ]
    for point in grid.points:
        lines.append(
            f"submit {shlex.quote(point.point_id + '.sbatch')} {shlex.quote(point.point_id)} "
            f"{shlex.quote(job_name(grid, point))}"
        )
    return "\n".join(lines) + "\n"


def write_slurm(grid: SweepGrid, sweep_dir: Path) -> list[Path]:
    slurm_dir = sweep_dir / "slurm"
    (slurm_dir / "logs").mkdir(parents=True, exist_ok=True)
    written = []
    for point in grid.points:
        path = slurm_dir / f"{point.point_id}.sbatch"
        path.write_text(point_script(grid, point, sweep_dir))
        written.append(path)
    submit = slurm_dir / "submit.sh"
    submit.write_text(submit_script(grid))
    submit.chmod(0o755)
    return written + [submit]
