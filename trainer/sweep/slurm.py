"""SLURM scripts for a sweep: one sbatch script per point plus a submit script (pure text).

Each job starts one power daemon per node (srun, one task per node) and waits until every one
listens (port files on shared storage), then a job-local collector on its first node writing the
grid's database (unless a cluster collector reads the job's daemons), then torchrun on every node
with c10d rendezvous at the first node. The ranks send markers to their node's daemon on
127.0.0.1. Near the time limit (USR1) training stops cleanly and the job requeues itself; each
attempt resumes from the point's checkpoint directory under the same run id, so the collector
merges the sessions into one run. A job that finishes training leaves `done/<point>.r<repeat>`;
`submit.sh` skips those and any (point, repeat) still queued, so re-running it retries exactly
the failed runs.
"""

from __future__ import annotations

import math
import re
import shlex
import uuid
from pathlib import Path

from trainer.sweep.grid import Point, SweepGrid
from trainer.sweep.runner import train_args

# Placeholders in generated arguments that become shell expansions in the script.
_VARS = {
    "@REPEAT@": "${REPEAT}",
    "@RUN_ID@": "${RUN_ID}",
    "@RDZV_ID@": "${RDZV_ID}",
    "@NNODES@": "${NNODES}",
    "@HEAD@": "${HEAD}",
    "@RDZV_PORT@": "${RDZV_PORT}",
    "@CKPT_DIR@": "${CKPT_DIR}",
}
# Each node's daemon writes its port to <job dir>/daemon-<node id>.port (shared storage, so the
# batch shell sees every node's) and removes it when it stops; a stale file from an attempt
# that was killed is removed before the daemon starts, so nobody waits on a dead daemon.
_DAEMON_TASK = (
    'pf="$0/daemon-${SLURM_NODEID:-0}.port"; rm -f "$pf"; '
    'power-daemon serve --hostname "${SLURMD_NODENAME:-$(hostname -s)}" --port-file "$pf" "$@" & '
    "pid=$!; trap 'kill -TERM \"$pid\" 2>/dev/null' TERM INT; "
    'rc=0; wait "$pid" || rc=$?; if kill -0 "$pid" 2>/dev/null; then wait "$pid" || rc=$?; fi; '
    'rm -f "$pf"; exit "$rc"'
)
# A training task reads its own node's daemon port (the literal @DAEMON_PORT@ in its args).
_TRAIN_TASK = (
    'port=$(cat "$0/daemon-${SLURM_NODEID:-0}.port" 2>/dev/null || echo "$DAEMON_PORT"); '
    'args=(); for a in "$@"; do args+=("${a//@DAEMON_PORT@/$port}"); done; exec "${args[@]}"'
)
NONCE_FILE = "run-id.nonce"


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


def slurm_problems(grid: SweepGrid, no_collector: bool = False) -> list[str]:
    """Reasons not to write SLURM scripts for the grid (empty: fine)."""
    opts, out = grid.slurm, []
    stores = opts.collector_db or opts.cluster_collector or not opts.start_daemons
    if not stores and not no_collector:
        out.append(
            "the jobs' power daemons would be read by no collector, so every reading would be "
            'lost: set collector_db = "parawatt.db" (SQLite in the sweep directory, on shared '
            "storage) or a PostgreSQL URL in [slurm], or cluster_collector = true where a "
            "cluster collector watches <sweep>/slurm/inventory/, or pass --no-collector"
        )
    if any(
        k == "checkpoint_dir"
        for k, _ in grid.train + tuple(kv for p in grid.points for kv in p.train)
    ):
        out.append("flag 'checkpoint_dir' is set per point by the SLURM scripts; remove it")
    return out


def _db_url(db: str) -> str:
    """A URL as given; a bare path is SQLite relative to the sweep directory."""
    if "://" in db:
        return shlex.quote(db)
    path = db if db.startswith("/") else f"$SWEEP_DIR/{db}"
    return f'"sqlite:///{path}"'


def _header(grid: SweepGrid, point: Point, nodes: int, per_node: int) -> list[str]:
    opts = grid.slurm
    gpus = (
        f"--gpus-per-node={per_node}"
        if opts.gpu_request == "gpus-per-node"
        else f"--gres=gpu:{opts.gres_type + ':' if opts.gres_type else ''}{per_node}"
    )
    lines = [
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH {gpus}",
        f"#SBATCH --cpus-per-task={opts.cpus_per_task or opts.cpus_per_gpu * per_node}",
        f"#SBATCH --time={opts.time}",
        # Relative to the submit directory (submit.sh runs sbatch in <sweep>/slurm).
        f"#SBATCH --output=logs/{point.point_id}-%j.out",
        "#SBATCH --open-mode=append",
    ]
    if opts.requeue:
        lines += [f"#SBATCH --signal=B:USR1@{opts.signal_s}", "#SBATCH --requeue"]
    if opts.partition:
        lines.append(f"#SBATCH --partition={opts.partition}")
    if opts.account:
        lines.append(f"#SBATCH --account={opts.account}")
    if opts.exclusive:
        lines.append("#SBATCH --exclusive")
    mem = opts.mem if opts.mem is not None else ("0" if opts.exclusive else None)
    if mem is not None:
        lines.append(f"#SBATCH --mem={mem}")
    return lines + [f"#SBATCH {extra}" for extra in opts.sbatch]


def point_script(grid: SweepGrid, point: Point, nonce: str = "0") -> str:
    opts = grid.slurm
    nodes, per_node = nodes_for(point, opts.gpus_per_node)
    tag = f"{point.point_id}.r${{REPEAT}}"
    lines = [
        "#!/bin/bash",
        f"# parawatt sweep {grid.name}, point {point.point_id}: {point.gpus} GPU(s) on {nodes} "
        f"node(s), GBS {point.global_batch_size}, LBS {point.local_batch_size}, "
        f"series {', '.join(point.series)}",
        "# Submit with submit.sh, or by hand from <sweep>/slurm: sbatch --job-name=NAME-rREPEAT "
        "THIS_FILE REPEAT",
        *_header(grid, point, nodes, per_node),
        "set -euo pipefail",
        'REPEAT="${1:?usage: sbatch SCRIPT REPEAT}"',
        *opts.setup,
        # The batch script runs from a spool copy: find the sweep from the submit directory.
        'SWEEP_DIR="${PARAWATT_SWEEP_DIR:-$(cd "${SLURM_SUBMIT_DIR:-$PWD}/.." && pwd)}"',
        f"NNODES={nodes}",
        # No `| head -n 1`: under pipefail, scontrol's SIGPIPE would fail the job.
        'mapfile -t HOSTS < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        'HEAD="${HOSTS[0]}"',
        f"RDZV_PORT={opts.rdzv_port}",
        f"DAEMON_PORT={opts.daemon_port}",
        # The same id in every attempt (requeue, resubmission): a resumed run merges.
        f'RUN_ID="{grid.name}.{tag}.{nonce}"',
        'RDZV_ID="${SLURM_JOB_ID}.${SLURM_RESTART_COUNT:-0}"',
        f'CKPT_DIR="$SWEEP_DIR/checkpoints/{tag}"',
        'JOB_DIR="$SWEEP_DIR/slurm/jobs/${SLURM_JOB_ID}"',
        'INVENTORY="$SWEEP_DIR/slurm/inventory/${SLURM_JOB_ID}.json"',
        'mkdir -p "$CKPT_DIR" "$JOB_DIR" "$SWEEP_DIR/slurm/done" "$SWEEP_DIR/slurm/inventory"',
        'rm -f "$JOB_DIR"/daemon-*.port  # left by an attempt that was killed (same job id)',
        "export DAEMON_PORT",
    ]
    if opts.nccl_timeout_s:
        lines.append(f"export PARAWATT_DIST_TIMEOUT_S={opts.nccl_timeout_s}")
    lines += [
        "daemon_pid=''; collector_pid=''; train_pid=''; requeue=0",
        "stop() {",
        '  if [ -n "$train_pid" ]; then kill -TERM "$train_pid" 2>/dev/null || true; fi',
        '  if [ -n "$collector_pid" ]; then kill -TERM "$collector_pid" 2>/dev/null || true; '
        'wait "$collector_pid" || true; fi',
        '  if [ -n "$daemon_pid" ]; then kill -TERM "$daemon_pid" 2>/dev/null || true; '
        'wait "$daemon_pid" || true; fi',
        '  rm -f "$INVENTORY" "$JOB_DIR"/daemon-*.port; rmdir "$JOB_DIR" 2>/dev/null || true',
        "}",
        "trap stop EXIT",
        "# Near the time limit: training stops at its next step (its last epoch is checkpointed)",
        "# and the job is requeued; the next attempt resumes from CKPT_DIR under the same RUN_ID.",
        "on_time_limit() {",
        '  echo "parawatt: time limit near; stopping training to requeue" >&2',
        '  requeue=1; if [ -n "$train_pid" ]; then kill -TERM "$train_pid" 2>/dev/null || true; fi',
        "}",
        "trap on_time_limit USR1",
    ]
    step = 'srun --overlap --nodes="$NNODES" --ntasks-per-node=1'
    daemon_args = ["--listen", f"0.0.0.0:{opts.daemon_port}", "--backend", opts.daemon_backend]
    if opts.daemon_metrics_port is not None:
        daemon_args += ["--metrics-listen", f"0.0.0.0:{opts.daemon_metrics_port}"]
    metrics_label = ""
    if opts.daemon_metrics_port is not None:  # where Prometheus scrapes them (its relabelling)
        metrics_label = f', "__metrics_port": "{opts.daemon_metrics_port}"'
    if opts.start_daemons:
        lines += [
            "# One power daemon per node: the collector reaches it on its port, the ranks on "
            "127.0.0.1.",
            f'{step} bash -c {shlex.quote(_DAEMON_TASK)} "$JOB_DIR" {shell_join(daemon_args)} &',
            "daemon_pid=$!",
            "for i in $(seq 0 $((NNODES - 1))); do",
            '  for _ in $(seq 1 600); do [ -s "$JOB_DIR/daemon-$i.port" ] && break; '
            'kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done',
            '  [ -s "$JOB_DIR/daemon-$i.port" ] || { echo "power-daemon did not start on '
            '${HOSTS[$i]}" >&2; exit 1; }',
            "done",
            "# The job's daemons as a Prometheus file_sd target group (a cluster collector or",
            "# Prometheus may watch <sweep>/slurm/inventory/); removed when the job ends.",
            "targets=(); daemons=()",
            "for i in $(seq 0 $((NNODES - 1))); do",
            '  t="${HOSTS[$i]}:$(cat "$JOB_DIR/daemon-$i.port")"',
            '  targets+=("\\"$t\\""); daemons+=(--daemon "$t")',
            "done",
            '(IFS=,; printf \'[{"targets": [%s], "labels": {"slurm_job_id": "%s"%s}}]\\n\' '
            f'"${{targets[*]}}" "$SLURM_JOB_ID" {shlex.quote(metrics_label)}) '
            '>"$INVENTORY.tmp"',
            'mv "$INVENTORY.tmp" "$INVENTORY"',
        ]
    else:
        lines += [
            'daemons=(); for host in "${HOSTS[@]}"; do daemons+=(--daemon "${host}:${DAEMON_PORT}"); done',
        ]
    local_collector = opts.collector_db and not opts.cluster_collector
    if local_collector:
        lines += [
            "# A job-local collector on this (the first) node reads the job's daemons.",
            f'collector serve "${{daemons[@]}}" --db {_db_url(opts.collector_db)} '
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
        "--rdzv-id=@RDZV_ID@",
        "-m",
        "trainer",
    ]
    train = train_args(grid, point, repeat="@REPEAT@", run_id="@RUN_ID@", daemon="127.0.0.1:PORT")
    train[train.index("127.0.0.1:PORT")] = "127.0.0.1:@DAEMON_PORT@"
    train += ["--checkpoint-dir", "@CKPT_DIR@"]
    lines += [
        f'{step} bash -c {shlex.quote(_TRAIN_TASK)} "$JOB_DIR" {shell_join(torchrun + train)} &',
        "train_pid=$!",
        # `wait` returns early when USR1 arrives; wait again for training's clean stop.
        'rc=0; wait "$train_pid" || rc=$?',
        'while kill -0 "$train_pid" 2>/dev/null; do rc=0; wait "$train_pid" || rc=$?; done',
        "train_pid=''",
    ]
    drain = f"sleep {opts.drain_s:g}  # let the collector catch up before it stops"
    lines += [
        # training that completed before the signal came is done: no needless requeue
        'if [ "$requeue" = 1 ] && [ "$rc" != 0 ]; then',
        *([f"  {drain}"] if local_collector else []),
        '  scontrol requeue "$SLURM_JOB_ID"; exit 0',
        "fi",
        '[ "$rc" = 0 ] || exit "$rc"',
        f'touch "$SWEEP_DIR/slurm/done/{tag}"',
    ]
    if local_collector:
        lines.append(drain)
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


def run_id_nonce(slurm_dir: Path) -> str:
    """The sweep's run-id suffix: new for a new sweep directory (runs never merge with an
    earlier sweep's in the same database), kept when the scripts are written again."""
    path = slurm_dir / NONCE_FILE
    if path.is_file() and re.fullmatch(r"[0-9a-f]{8}", nonce := path.read_text().strip()):
        return nonce
    nonce = uuid.uuid4().hex[:8]
    path.write_text(nonce + "\n")
    return nonce


def write_slurm(grid: SweepGrid, sweep_dir: Path) -> list[Path]:
    slurm_dir = sweep_dir / "slurm"
    (slurm_dir / "logs").mkdir(parents=True, exist_ok=True)
    nonce = run_id_nonce(slurm_dir)
    written = []
    for point in grid.points:
        path = slurm_dir / f"{point.point_id}.sbatch"
        path.write_text(point_script(grid, point, nonce))
        written.append(path)
    submit = slurm_dir / "submit.sh"
    submit.write_text(submit_script(grid))
    submit.chmod(0o755)
    return written + [submit]
