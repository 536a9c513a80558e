"""torch.distributed set-up from torchrun's environment, and the few collectives the run needs.

nccl on CUDA, gloo on CPU. A single process started without torchrun runs without a process group.
A separate gloo group carries control traffic (run id, stop agreement, end-of-run gather) on the
CPU, so it never touches the GPU stream and never needs a device sync.

Multi-NIC clusters: gloo picks the interface its host name resolves to, which may be a slow or
unrouted management network. Name the right one with `GLOO_SOCKET_IFNAME` (e.g. `ib0`, or
`ib0,ib1`), as NCCL's `NCCL_SOCKET_IFNAME` does for its bootstrap; set both in the job script.

Devices: a rank uses CUDA device `LOCAL_RANK` when it sees all the node's GPUs, and device 0 when
it sees exactly one (SLURM's `--gpus-per-task=1` / `CUDA_VISIBLE_DEVICES` of length one per task).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import torch
import torch.distributed as dist

from trainer.errors import ConfigError


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    nodes: int = 1
    backend: str = "none"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    control: object = None  # gloo ProcessGroup for CPU-side control traffic

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_object(self, obj):
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def gather_objects(self, obj) -> list:
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.control)
        return out

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


class CudaApi(Protocol):
    """The part of `torch.cuda` that device selection uses (a fake in tests)."""

    def is_available(self) -> bool: ...
    def device_count(self) -> int: ...
    def set_device(self, device: int) -> None: ...


def select_device(cuda: CudaApi, local_rank: int) -> torch.device:
    """This rank's device, made current: CUDA `local_rank`, or 0 when only one GPU is visible."""
    if not cuda.is_available():
        return torch.device("cpu")
    count = cuda.device_count()
    if count == 1:
        index = 0
    elif local_rank < count:
        index = local_rank
    else:
        raise ConfigError(
            f"local rank {local_rank} but this process sees {count} GPUs "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): give "
            "each task one GPU or all of the node's"
        )
    cuda.set_device(index)
    return torch.device("cuda", index)


def init_distributed() -> DistContext:
    env = os.environ
    world = world_size_from_env()
    rank = int(env.get("RANK", "0"))
    local_rank = int(env.get("LOCAL_RANK", "0"))
    local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    nodes = int(env.get("GROUP_WORLD_SIZE", "0")) or max(1, world // max(1, local_world))
    device = select_device(torch.cuda, local_rank)
    cuda = device.type == "cuda"
    ctx = DistContext(rank, world, local_rank, local_world, nodes, "none", device)
    if world > 1:
        backend = "nccl" if cuda else "gloo"
        kwargs = {"device_id": device} if cuda else {}
        dist.init_process_group(backend=backend, timeout=_collective_timeout(), **kwargs)
        ctx.backend = backend
        # Its own group even on gloo, so control votes never interleave with DDP's buckets.
        ctx.control = dist.new_group(backend="gloo")
    return ctx


def _collective_timeout() -> timedelta:
    """$PARAWATT_DIST_TIMEOUT_S (SLURM scripts set it from the grid's nccl_timeout_s): a hung
    collective fails the job this soon instead of after torch's 30 minutes."""
    text = os.environ.get("PARAWATT_DIST_TIMEOUT_S", "")
    try:
        seconds = float(text) if text else 1800.0
    except ValueError:
        seconds = 1800.0
    return timedelta(seconds=seconds if 0 < seconds < 86400 * 7 else 1800.0)


class StopAgreement:
    """All ranks stop at the same step when any rank was asked to (Ctrl-C, SIGTERM).

    Every `every`-th call (the same steps on every rank: all ranks call once per step) launches
    an asynchronous MAX all-reduce of the local stop flag on the gloo control group and reads the
    previous vote's result, which every rank has contributed to by then: a stop takes effect at
    the same step everywhere, at most 2 x `every` steps after it was asked for, with no device
    sync and no rank left waiting in a collective the others skipped. Voting every step cost
    measurable time at many ranks (see bench/bench_stop_agreement.py); every 10 steps is the
    trainer's default (--stop-check-every).
    """

    def __init__(self, ctx: DistContext, every: int = 1):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.ctx = ctx
        self.every = every
        self._calls = 0
        self._pending = None  # (work, tensor)

    def should_stop(self, local_stop: bool) -> bool:
        if not self.ctx.distributed:
            return local_stop
        self._calls += 1
        if (self._calls - 1) % self.every:
            return False
        decided = False
        if self._pending is not None:
            work, flag = self._pending
            work.wait()
            decided = bool(flag.item())
        flag = torch.tensor([1 if local_stop else 0], dtype=torch.int32)
        work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.ctx.control, async_op=True)
        self._pending = (work, flag)
        return decided

    def finish(self) -> None:
        """Drain the last in-flight vote so every rank issues the same collectives."""
        if self._pending is not None:
            self._pending[0].wait()
            self._pending = None


def hostname() -> str:
    return socket.gethostname()
