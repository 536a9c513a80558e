"""Drive a sim daemon like a training job would: markers sent in real time over gRPC."""

from __future__ import annotations

import time

import grpc
from sqlalchemy import func, select

from collector.store.models import Interval
from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto import parawatt_pb2_grpc as pb_grpc


class MarkerSender:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.PowerDaemonStub(self.channel)

    def send(
        self,
        kind: int,
        run_id: str,
        rank: int = 0,
        epoch: int = 0,
        step: int = 0,
        local_rank: int = 0,
        **fields,
    ) -> int:
        t = time.time_ns()
        m = pb.Marker(run_id=run_id, rank=rank, kind=kind, epoch=epoch, step=step, time_ns=t,
                      local_rank=local_rank, **fields)  # fmt: skip
        self.stub.SendMarkers(pb.MarkerBatch(markers=[m]), timeout=5)
        return t

    def close(self) -> None:
        self.channel.close()


def run_job(
    address: str,
    run_id: str,
    epochs: int = 2,
    steps: int = 4,
    step_s: float = 0.15,
    gap_s: float = 0.03,
    ranks: tuple[int, ...] = (0,),
    on_step=None,
    gpu_of: dict[int, int] | None = None,
) -> list[int]:
    """RUN_START .. RUN_END with `steps` steps per epoch for each rank (rank r on GPU r, or on
    GPU gpu_of[r]: its local rank)."""
    s = MarkerSender(address)
    gpu = gpu_of or {r: r for r in ranks}
    cfg = pb.RunConfig(world_size=len(ranks), nodes=1, model="resnet50", dataset="synthetic",
                       global_batch_size=8 * len(ranks), local_batch_size=8, accumulation_steps=1,
                       epochs=epochs, steps_per_epoch=steps, device_name="sim",
                       tags={"sweep": "test"})  # fmt: skip
    times, n = [], 0
    for r in ranks:
        times.append(s.send(pb.RUN_START, run_id, r, local_rank=gpu[r], config=cfg))
    for e in range(epochs):
        for r in ranks:
            s.send(pb.EPOCH_START, run_id, r, e, local_rank=gpu[r])
        for _ in range(steps):
            for r in ranks:
                s.send(pb.STEP_START, run_id, r, e, n, local_rank=gpu[r])
            time.sleep(step_s)
            for r in ranks:
                s.send(
                    pb.STEP_END, run_id, r, e, n, local_rank=gpu[r], metrics={"loss": 1.0 / (n + 1)}
                )
            if on_step:
                on_step(n)
            n += 1
            time.sleep(gap_s)
        for r in ranks:
            s.send(
                pb.EPOCH_END,
                run_id,
                r,
                e,
                local_rank=gpu[r],
                metrics={"top1_error": 0.9 - 0.1 * e, "samples": 8.0 * steps},
            )
    for r in ranks:
        times.append(
            s.send(
                pb.RUN_END,
                run_id,
                r,
                local_rank=gpu[r],
                status=pb.RUN_STATUS_COMPLETED,
                metrics={"markers_dropped": 0.0},
            )
        )
    s.close()
    return times


def wait_for_intervals(engine, run_id: str, kind: str, n: int, timeout_s: float = 20.0) -> int:
    deadline = time.monotonic() + timeout_s
    got = 0
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            got = conn.scalar(
                select(func.count()).where(Interval.run_id == run_id, Interval.kind == kind)
            )
        if got >= n:
            return got
        time.sleep(0.1)
    return got
