"""Where this process stands in the job, from the launcher's environment (torchrun, SLURM) or an
initialised `torch.distributed`, and how the ranks agree on the run id and the run's token.

torch is never imported here: it is used only when the training script already imported it.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

ENV_DAEMON = "PARAWATT_DAEMON"
ENV_RUN_ID = "PARAWATT_RUN_ID"
ENV_RUN_TOKEN = "PARAWATT_RUN_TOKEN"
DEFAULT_DAEMON = "127.0.0.1:50051"  # the daemon's default listen address
OFF = ("off", "none")
TOKEN_BYTES = 32


@dataclass(frozen=True)
class Place:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    nodes: int = 1
    backend: str = ""  # torch.distributed backend when initialised


def _int(env: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        value = env.get(name, "")
        if value.strip().isdigit():
            return int(value)
    return None


def dist_module():
    """torch.distributed when torch is loaded and a process group is up, else None."""
    if "torch" not in sys.modules:
        return None
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


def place(env: Mapping[str, str] | None = None) -> Place:
    """Rank, local rank, world size and node count: torch.distributed, then torchrun's variables,
    then SLURM's, then a single process."""
    env = os.environ if env is None else env
    world = _int(env, "WORLD_SIZE", "SLURM_NTASKS") or 1
    rank = _int(env, "RANK", "SLURM_PROCID") or 0
    backend = ""
    dist = dist_module()
    if dist is not None:
        world, rank, backend = dist.get_world_size(), dist.get_rank(), str(dist.get_backend())
    local_rank = _int(env, "LOCAL_RANK", "SLURM_LOCALID") or 0
    local_world = _int(env, "LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE") or (
        world if _int(env, "SLURM_NNODES", "SLURM_JOB_NUM_NODES") in (None, 1) else 1
    )
    nodes = _int(env, "GROUP_WORLD_SIZE", "SLURM_NNODES", "SLURM_JOB_NUM_NODES")
    nodes = nodes or max(1, world // max(1, local_world))
    return Place(rank, local_rank, world, min(local_world, world), nodes, backend)


def daemon_address(daemon: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The argument, then $PARAWATT_DAEMON, then the default local daemon; None: markers off."""
    env = os.environ if env is None else env
    address = daemon if daemon is not None else env.get(ENV_DAEMON) or DEFAULT_DAEMON
    address = address.strip()
    return None if address.lower() in OFF else address


def new_run_id(name: str = "run") -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:64] or "run"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def token_from_env(env: Mapping[str, str] | None = None) -> bytes | None:
    """$PARAWATT_RUN_TOKEN (hex, 32 bytes) or None. The message never contains the value."""
    env = os.environ if env is None else env
    text = env.get(ENV_RUN_TOKEN, "").strip()
    if not text:
        return None
    try:
        token = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"${ENV_RUN_TOKEN} is not hexadecimal") from None
    if len(token) != TOKEN_BYTES:
        raise ValueError(
            f"${ENV_RUN_TOKEN} must be {TOKEN_BYTES} bytes ({2 * TOKEN_BYTES} hex digits)"
        )
    return token


def _launch_id(env: Mapping[str, str]) -> str | None:
    """An id every rank of one launch sees alike: torchrun's rendezvous run id, SLURM's job step."""
    elastic = env.get("TORCHELASTIC_RUN_ID", "")
    if elastic and elastic != "none":
        return f"job-{elastic}"
    if env.get("SLURM_JOB_ID"):
        return f"job-{env['SLURM_JOB_ID']}.{env.get('SLURM_STEP_ID', '0')}"
    return None


def agree(
    run_id: str | None,
    name: str,
    where: Place,
    group=None,
    env: Mapping[str, str] | None = None,
    token: bytes | None = None,
) -> tuple[str, bytes, str]:
    """(run id, token, how) the same on every rank.

    With torch.distributed up, rank 0's id and token are broadcast (a collective: every rank must
    call `track`). Without it, the environment must agree: $PARAWATT_RUN_ID (else torchrun's or
    SLURM's launch id) and $PARAWATT_RUN_TOKEN; a single process makes its own. `token`: the
    run's token when the caller keeps it (a resumed run), else $PARAWATT_RUN_TOKEN or a new one."""
    env = os.environ if env is None else env
    run_id = run_id or env.get(ENV_RUN_ID) or None
    token = token or token_from_env(env)
    dist = dist_module()
    if dist is not None and where.world_size > 1:
        box = [None]
        if where.rank == 0:
            box = [(run_id or new_run_id(name), token or secrets.token_bytes(TOKEN_BYTES))]
        dist.broadcast_object_list(box, src=0, group=group)
        return box[0][0], box[0][1], "broadcast"
    if where.world_size > 1:
        run_id = run_id or _launch_id(env)
        if run_id is None:
            raise ValueError(
                f"{where.world_size} ranks without torch.distributed: give the same run id to "
                f"all ranks (run_id=... or ${ENV_RUN_ID}), or call parawatt.track after "
                "torch.distributed.init_process_group"
            )
        if token is None:
            return run_id, b"", "environment, no token"
        return run_id, token, "environment"
    return run_id or new_run_id(name), token or secrets.token_bytes(TOKEN_BYTES), "local"
