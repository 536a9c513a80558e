"""Cost of the ranks' per-step stop agreement (trainer/train/distributed.py StopAgreement) with many
gloo ranks on this machine, voting every step vs every N steps, and where a stop lands.

Each rank is a process (fork) in one gloo world on loopback, as torchrun would start them, with
the trainer's separate gloo control group. A "step" is `--work-ms` of sleep (a GPU-bound step,
where the CPU mostly waits) followed by `should_stop`. Printed: mean step time per mode, the
overhead over no agreement at all, and the step at which all ranks stopped when one rank asked.

Usage: python bench/bench_stop_agreement.py [--ranks 16 32] [--steps 200] [--every 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import time
from datetime import timedelta

import torch.distributed as dist

from trainer.train.distributed import DistContext, StopAgreement


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, args, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(minutes=5))
    ctx = DistContext(rank, world, backend="gloo", control=dist.new_group(backend="gloo"))
    results = {}
    for mode, every in (("none", 0), ("every step", 1), (f"every {args.every}", args.every)):
        agreement = StopAgreement(ctx, every) if every else None
        dist.barrier()
        began = time.perf_counter()
        for _ in range(args.steps):
            if args.work_ms:
                time.sleep(args.work_ms / 1000)
            if agreement is not None:
                agreement.should_stop(False)
        if agreement is not None:
            agreement.finish()
        results[mode] = (time.perf_counter() - began) / args.steps
    # Where a stop lands: rank world-1 is asked at step 37; every rank must stop at one step.
    agreement, stopped = StopAgreement(ctx, args.every), None
    for step in range(1000):
        if agreement.should_stop(rank == world - 1 and step >= 37):
            stopped = step
            break
    agreement.finish()
    results["stopped_at"] = stopped
    gathered = [None] * world
    dist.all_gather_object(gathered, results)
    if rank == 0:
        out.put(gathered)
    dist.destroy_process_group()


def run(world: int, args) -> list[dict]:
    ctx = multiprocessing.get_context("fork")
    out, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_rank, args=(r, world, port, args, out)) for r in range(world)]
    for p in procs:
        p.start()
    gathered = out.get(timeout=900)
    for p in procs:
        p.join(60)
    return gathered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--work-ms", type=float, default=20.0)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, {args.steps} steps of {args.work_ms:g} ms work per mode")
    for world in args.ranks:
        gathered = run(world, args)
        modes = [k for k in gathered[0] if k != "stopped_at"]
        mean = {m: max(r[m] for r in gathered) for m in modes}  # the slowest rank sets the pace
        base = mean["none"]
        line = ", ".join(
            f"{m}: {mean[m] * 1e3:.2f} ms (+{(mean[m] - base) * 1e3:.2f})" for m in modes
        )
        stops = {r["stopped_at"] for r in gathered}
        print(f"{world:3d} ranks: step time {line}; stop asked at step 37, all ranks stopped at "
              f"{sorted(stops)}")  # fmt: skip


if __name__ == "__main__":
    main()
