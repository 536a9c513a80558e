"""Launch `torchrun` from tests, CPU only (shared by the trainer, collector and sweep tests).

    from tests.support.torchrun import run_torchrun
    proc = run_torchrun(["trainer", "train", "--model", "resnet50", ...], nproc=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr

`module_args` is everything after `-m`: the module to run, then its arguments. The command is
`<venv python> -m torch.distributed.run --standalone --nproc-per-node N -m <module_args...>`;
`--standalone` gives every launch its own rendezvous on a free localhost port, so tests never
collide on a master port. The environment is this one plus `CUDA_VISIBLE_DEVICES=""` (gloo on the
CPU even on a GPU host), `OMP_NUM_THREADS=1`, `PYTHONUNBUFFERED=1`, then `env` on top.
Output is captured as text. On timeout the whole process tree (agent and workers, which torchrun
starts in sessions of their own) is killed and `subprocess.TimeoutExpired` is raised.

`start_torchrun(...)` is the same launch as a `Popen` (stdout/stderr to pipes unless given), for
tests that signal or watch a run; `stop_tree(proc)` cleans one up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = str(_VENV_PYTHON) if _VENV_PYTHON.exists() else sys.executable
DEFAULT_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_env(env: dict | None = None) -> dict[str, str]:
    out = dict(os.environ)
    out.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    out.update(env or {})
    return out


def torchrun_command(module_args: list[str], nproc: int) -> list[str]:
    return [
        PYTHON,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        *module_args,
    ]


def start_torchrun(
    module_args: list[str], nproc: int, env: dict | None = None, **popen_kwargs
) -> subprocess.Popen:
    popen_kwargs.setdefault("stdout", subprocess.PIPE)
    popen_kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        torchrun_command(module_args, nproc),
        env=cpu_env(env),
        cwd=REPO,
        text=True,
        **popen_kwargs,
    )


def run_torchrun(
    module_args: list[str],
    nproc: int,
    env: dict | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> subprocess.CompletedProcess:
    proc = start_torchrun(module_args, nproc, env)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_tree(proc)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def descendants(pid: int) -> list[int]:
    """Child processes of `pid`, recursively (from /proc; Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop_tree(proc: subprocess.Popen) -> None:
    """Kill a launch started here and every process under it, by pid."""
    for pid in [*descendants(proc.pid), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
        proc.communicate(timeout=10)
