"""Two collectors, one PostgreSQL: a 2-node torchrun job whose nodes are read by different
collectors has complete run, epoch and step results whichever collector finishes last.

Two sim daemons stand for two nodes (hostnames node-a, node-b); torchrun runs twice on this
machine (`--nnodes 2 --node-rank 0/1`, static rendezvous on localhost), each "node" marking to
its own daemon. Collector A reads node-a live; collector B starts only after training ended and
catches up from node-b's ring buffer, so for a while the database holds half the job (flagged
partial), then all of it.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from collector.config import CollectorConfig
from collector.service import create_collector
from collector.store import queries
from collector.store.models import Device, Interval, Marker, Node, Run
from parawatt_proto import parawatt_pb2 as pb
from tests.collector.drive import MarkerSender, wait_for_intervals
from tests.support.torchrun import PYTHON, REPO, cpu_env, free_port, stop_tree
from tests.trainer.trainer_args import RESNET

EPOCHS, STEPS, RUN = 2, 4, "two-nodes"


def collector(address: str, db_url: str):
    return create_collector(
        CollectorConfig(
            daemons=(address,),
            db_url=db_url,
            metrics_listen=None,
            late_bound_s=1.0,
            flush_interval_s=0.1,
        )  # fmt: skip
    )


def launch_node(node_rank: int, daemon: str, port: int) -> subprocess.Popen:
    cmd = [PYTHON, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={node_rank}",
           "--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}",
           "-m", "trainer", "train", "--quiet", *RESNET, "--epochs", str(EPOCHS),
           "--steps-per-epoch", str(STEPS), "--global-batch-size", "4",
           "--daemon", daemon, "--run-id", RUN]  # fmt: skip
    return subprocess.Popen(cmd, cwd=REPO, env=cpu_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def by_node(engine) -> dict[str, list[Interval]]:
    """The run's intervals by the node whose device they were measured on."""
    with Session(engine, expire_on_commit=False) as session:
        rows = session.execute(
            select(Node.hostname, Interval)
            .join(Device, Device.id == Interval.device_id)
            .join(Node, Node.id == Device.node_id)
            .where(Interval.run_id == RUN)
        ).all()
        session.expunge_all()
    out: dict[str, list[Interval]] = {}
    for hostname, interval in rows:
        out.setdefault(hostname, []).append(interval)
    return out


@pytest.mark.slow
@pytest.mark.postgres
def test_two_nodes_two_collectors_one_postgres(start_sim_daemon, pg_url):
    a = start_sim_daemon(hostname="node-a", sim_devices=1)
    b = start_sim_daemon(hostname="node-b", sim_devices=1)
    col_a = collector(a.address, pg_url).start()
    col_b = None
    port = free_port()
    procs = [launch_node(0, a.address, port), launch_node(1, b.address, port)]
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, out[-2000:] + err[-4000:]
        # Node-a's half is in; node-b's is not read yet: the results say they are partial.
        assert wait_for_intervals(col_a.engine, RUN, "run", 1) == 1
        assert col_a.flush()
        half = queries.run_summary(col_a.engine, RUN)
        assert half.world_size == 2 and "partial" in half.flags
        assert all("partial" in e.flags for e in queries.epoch_summaries(col_a.engine, RUN))
        assert all(
            s.ranks == 1 and "partial" in s.flags for s in queries.job_steps(col_a.engine, RUN)
        )

        col_b = collector(b.address, pg_url).start()  # finishes last, from the ring buffer
        assert wait_for_intervals(col_b.engine, RUN, "run", 2) == 2
        assert col_b.flush() and col_a.flush()

        nodes = by_node(col_a.engine)
        assert sorted(nodes) == ["node-a", "node-b"]
        for hostname, rows in nodes.items():  # each node: its rank's every step, epoch, run
            ivs = rows
            (rank,) = {i.rank for i in ivs}
            steps = sorted(i.step for i in ivs if i.kind == "step")
            assert steps == list(range(EPOCHS * STEPS)), hostname
            assert sorted(i.epoch for i in ivs if i.kind == "epoch") == list(range(EPOCHS))
            assert all(i.energy_j and i.energy_j > 0 for i in ivs)
            # Coverage < 1 only where the loaded test machine starves this process's sim sampler
            # (it shares the GIL with two collectors; 0.65 was seen in CI for an epoch): a short
            # step may fall in a hole whole; the energy is checked against the truth below.
            assert all(i.coverage > 0.3 for i in ivs if i.kind != "step")
            daemon = a if hostname == "node-a" else b
            (run_iv,) = [i for i in ivs if i.kind == "run"]
            truth = daemon.backend.true_energy_j(daemon.uuids[0], run_iv.start_ns, run_iv.end_ns)
            assert run_iv.energy_j == pytest.approx(truth, rel=0.01), hostname
        assert {i.rank for rows in nodes.values() for i in rows} == {0, 1}

        run = queries.run_summary(col_b.engine, RUN)
        per_node = [sum(i.energy_j for i in rows if i.kind == "run")
                    for rows in nodes.values()]  # fmt: skip
        assert run.energy_j == pytest.approx(sum(per_node), rel=1e-9)
        assert run.status == "completed" and run.world_size == 2 and run.nodes == 2
        assert "partial" not in run.flags and run.steps == EPOCHS * STEPS
        for e in queries.epoch_summaries(col_b.engine, RUN):
            assert "partial" not in e.flags
            mine = [i.energy_j for rows in nodes.values() for i in rows
                    if i.kind == "epoch" and i.epoch == e.epoch]  # fmt: skip
            assert len(mine) == 2 and e.energy_j == pytest.approx(sum(mine))
        steps = queries.job_steps(col_b.engine, RUN)
        assert [s.step for s in steps] == list(range(EPOCHS * STEPS))
        assert all(s.ranks == 2 and "partial" not in s.flags for s in steps)
        with col_a.engine.connect() as conn:
            assert conn.execute(select(Run.run_id)).scalars().all() == [RUN]
    finally:
        for p in procs:
            if p.poll() is None:
                stop_tree(p)
        col_a.close()
        if col_b is not None:
            col_b.close()


def test_a_restarted_collector_rebuilds_only_its_own_nodes(start_sim_daemon, tmp_path):
    """Collectors A (node-a) and B (node-b) share a database; a run spans both nodes and both
    collectors restart mid-run. Each rebuilds the open state of its own node only: the other
    node's intervals are the other collector's to compute (A never sees node-b's readings whole
    and would store late, partial energies for them, which B's correct ones could not replace)."""
    a = start_sim_daemon(hostname="node-a", sim_devices=1)
    b = start_sim_daemon(hostname="node-b", sim_devices=1)
    db = f"sqlite:///{tmp_path / 'p.db'}"
    senders = {0: MarkerSender(a.address), 1: MarkerSender(b.address)}
    cfg = pb.RunConfig(world_size=2, nodes=2, model="resnet50")
    for rank, s in senders.items():
        s.send(pb.RUN_START, "spans", rank, config=cfg)
        s.send(pb.EPOCH_START, "spans", rank)
    with collector(a.address, db) as col_a, collector(b.address, db) as col_b:
        assert wait_for(lambda: marker_count(col_a.engine) == 4) and col_a.flush() and col_b.flush()
    with collector(a.address, db) as col_a, collector(b.address, db) as col_b:  # restarted
        assert {k[1] for k in col_a.joiner.pending_keys()} == {0}
        assert {k[1] for k in col_b.joiner.pending_keys()} == {1}
        time.sleep(0.3)
        for rank, s in senders.items():
            s.send(pb.EPOCH_END, "spans", rank)
            s.send(pb.RUN_END, "spans", rank, status=pb.RUN_STATUS_COMPLETED)
        assert wait_for_intervals(col_a.engine, "spans", "run", 2) == 2
        assert col_a.flush() and col_b.flush()
        with col_a.engine.connect() as conn:
            ivs = conn.execute(select(Interval).where(Interval.run_id == "spans")).all()
        assert sorted((i.rank, i.kind) for i in ivs) == [
            (0, "epoch"), (0, "run"), (1, "epoch"), (1, "run")
        ]  # fmt: skip
        # no "late" or "incomplete" (a collector computing the other's node from half its
        # readings); "idle_unknown": sim devices here have no minute of idle history yet;
        # "gap": a loaded test machine starving the in-process sim daemon's sampler
        flags = {f for i in ivs for f in i.flags.split(",") if f}
        assert flags <= {"idle_unknown", "gap"}, flags
        run = queries.run_summary(col_a.engine, "spans")
        assert "partial" not in run.flags and run.status == "completed"
    for s in senders.values():
        s.close()


def marker_count(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(Marker))


def wait_for(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
