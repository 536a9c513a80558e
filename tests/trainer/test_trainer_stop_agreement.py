"""The ranks' stop vote held every N steps: a stop asked for on any one rank stops every rank at
the same step, within 2 N steps, and the ranks issue the same collectives (3 gloo processes)."""

from __future__ import annotations

import multiprocessing
import os
from datetime import timedelta

import torch.distributed as dist

from tests.support.torchrun import free_port
from trainer.train.distributed import DistContext, StopAgreement

ASKED_AT, EVERY, WORLD = 13, 4, 3


def _rank(rank: int, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(minutes=2))
    try:
        ctx = DistContext(rank, WORLD, backend="gloo", control=dist.new_group(backend="gloo"))
        agreement, stopped = StopAgreement(ctx, EVERY), None
        for step in range(200):
            if agreement.should_stop(rank == 1 and step >= ASKED_AT):
                stopped = step
                break
        agreement.finish()
        dist.barrier(group=ctx.control)  # hangs (and times out) if the collectives differ
        out.put((rank, stopped))
    finally:
        dist.destroy_process_group()


def test_a_stop_on_one_rank_stops_all_at_the_same_step_within_two_votes():
    ctx = multiprocessing.get_context("fork")
    out, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, out)) for r in range(WORLD)]
    for p in procs:
        p.start()
    try:
        stopped = dict(out.get(timeout=120) for _ in range(WORLD))
    finally:
        for p in procs:
            p.join(60)
    assert sorted(stopped) == [0, 1, 2]
    steps = set(stopped.values())
    assert len(steps) == 1, stopped
    (step,) = steps
    assert ASKED_AT < step <= ASKED_AT + 2 * EVERY and step % EVERY == 0


def test_a_single_process_stops_at_once():
    agreement = StopAgreement(DistContext(), every=10)
    assert not agreement.should_stop(False) and agreement.should_stop(True)
