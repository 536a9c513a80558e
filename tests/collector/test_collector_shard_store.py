"""Two collectors writing the same runs into one PostgreSQL at the same moment.

Each collector stores the ranks of its own node; both create the same run rows concurrently and
both move the run's start, end and status. Nothing may fail for good, and the rows must end the
same whichever transaction commits first: start = earliest, end = latest, rank 0's configuration,
a rank's failure kept, every rank's interval present.
"""

from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import func, select

from collector.errors import StoreError
from collector.records import IntervalRec
from collector.store.db import create_db_engine, migrate
from collector.store.models import Device, Interval, Node, Run, RunRank
from collector.store.store import Store
from collector.store.writebatch import WriteBatch
from parawatt_proto.records import RunConfigRec
from tests.collector.synth import MS, T0, S, SynthDevice, marker, node

pytestmark = pytest.mark.postgres
RUNS, ROUNDS = 40, 4


def batches(rank: int, seed: int) -> list[WriteBatch]:
    """One collector's node (gpu-<rank>) with rank `rank` of every run: starts, then ends."""
    dev = SynthDevice(f"gpu-{rank}")
    n = node(f"node-{rank}", [dev], boot_id=f"boot-{rank}")
    cfg = RunConfigRec(world_size=2, nodes=2, model="resnet50" if rank == 0 else "not-rank-0",
                       global_batch_size=64)  # fmt: skip
    rng = random.Random(seed)
    ids = [f"run-{i:03d}" for i in range(RUNS)]
    starts, ends = WriteBatch(nodes={n.boot_id: n}), WriteBatch(nodes={n.boot_id: n})
    for run_id in rng.sample(ids, len(ids)):  # each collector its own order
        k = int(run_id[-3:])
        t0 = T0 + k * S + rank * MS  # rank 1 starts 1 ms later, ends 1 ms later
        kw = dict(run_id=run_id, rank=rank, device_uuid=dev.uuid, hostname=n.hostname)
        starts.markers.append((n.boot_id, marker("run_start", t0, local_rank=0, config=cfg, **kw)))
        status = "failed" if rank == 1 and k % 5 == 0 else "completed"
        ends.markers.append((n.boot_id, marker("run_end", t0 + S // 2, status=status, **kw)))
        ends.intervals.append(IntervalRec(run_id, rank, dev.uuid, "run", 0, 0, t0, t0 + S // 2,
                                          100.0 + rank, None, "counter", 100.0, 0.1, 200.0,
                                          210.0, 1.0))  # fmt: skip
    return [starts, ends]


def test_concurrent_collectors_on_one_postgres(pg_url):
    engines = [create_db_engine(pg_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def collector(rank: int) -> None:
        store, engine = Store(engines[rank]), engines[rank]
        try:
            migrate(engine)  # both at once: serialized by the migration lock
            for r in range(ROUNDS):  # the same batches again: replays change nothing
                for batch in batches(rank, seed=r * 2 + rank):
                    barrier.wait(30)
                    for _ in range(5):  # what the writer does: retry a transient failure
                        try:
                            store.write(batch)
                            break
                        except StoreError as exc:
                            if not exc.transient:
                                raise
                    else:
                        raise AssertionError("kept failing")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=collector, args=(rank,)) for rank in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors

    with engines[0].connect() as conn:
        runs = conn.execute(select(Run).order_by(Run.run_id)).all()
        assert len(runs) == RUNS
        for run in runs:
            k = int(run.run_id[-3:])
            assert run.start_ns == T0 + k * S and run.end_ns == T0 + k * S + MS + S // 2
            assert run.model == "resnet50" and run.world_size == 2
            assert run.status == ("failed" if k % 5 == 0 else "completed"), run.run_id
        assert conn.scalar(select(func.count()).select_from(RunRank)) == 2 * RUNS
        assert conn.scalar(select(func.count()).select_from(Node)) == 2
        assert conn.scalar(select(func.count()).select_from(Device)) == 2
        sums = conn.execute(
            select(Interval.run_id, func.count(), func.sum(Interval.energy_j)).group_by(
                Interval.run_id
            )
        ).all()
        assert sorted((n, e) for _, n, e in sums) == [(2, 201.0)] * RUNS
    for e in engines:
        e.dispose()
