"""A daemon handed from one collector to another mid-run (an inventory change, a new --shard
count): the collector that takes it over rebuilds the node's open intervals from the database,
so the run's steps, epochs and run interval are complete and exact, and the one that let it go
neither keeps its state nor writes anything for that node again."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from collector.service import create_collector
from collector.store import queries
from collector.store.models import Device, Interval
from tests.collector.drive import MarkerSender
from tests.collector.test_collector_resume import run_session
from tests.collector.test_collector_service import config, wait_for_idle

pytestmark = pytest.mark.slow


def intervals(engine, kind):
    with engine.connect() as conn:
        return conn.execute(select(Interval).where(Interval.kind == kind)).all()


def test_a_daemon_handed_over_mid_run_loses_no_interval(sim_daemon, tmp_path):
    db = f"sqlite:///{tmp_path / 'h.db'}"
    a = create_collector(config([], db)).start()
    b = create_collector(config([], db, metrics_listen=None)).start()
    a.set_daemons([sim_daemon.address])

    def hand_over(step: int) -> None:
        if step == 3:  # after epoch 1's first step: a has written steps 0-2 and epoch 0
            assert a.flush()
            a.set_daemons([])
            b.set_daemons([sim_daemon.address])

    assert wait_for_idle(a, len(sim_daemon.backend.devices()))  # idle readings first
    sender = MarkerSender(sim_daemon.address)
    start, end = run_session(sender, "hand", [0, 1], on_step=hand_over)
    sender.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not intervals(b.engine, "run"):
        time.sleep(0.1)
    assert b.flush() and a.flush()
    steps, epochs = intervals(b.engine, "step"), intervals(b.engine, "epoch")
    runs = intervals(b.engine, "run")
    with b.engine.connect() as conn:
        gpu = dict(conn.execute(select(Device.id, Device.uuid)).all())
    summary = queries.run_summary(b.engine, "hand")
    a_nodes = a.joiner.node_names()
    a.close()
    b.close()

    truth = sim_daemon.backend.true_energy_j
    assert sorted(s.step for s in steps) == list(range(6))
    assert sorted(e.epoch for e in epochs) == [0, 1]
    (run,) = runs
    assert (run.start_ns, run.end_ns) == (start, end)
    for i in [*steps, *epochs, run]:
        assert i.energy_j is not None and "late" not in i.flags, i
        exact = truth(gpu[i.device_id], i.start_ns, i.end_ns)
        assert abs(i.energy_j - exact) <= i.uncertainty_bound_j + 0.01, i
    assert summary.steps == 6 and summary.epochs == 2 and summary.status == "completed"
    assert a_nodes == []  # the collector that let the daemon go keeps nothing of its node
