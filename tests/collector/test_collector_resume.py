"""A run resumed from a checkpoint, end to end: markers sent to a sim daemon like the trainer
sends them (same run id, RUN_START/RUN_END again), the collector restarted mid-session."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from collector.service import create_collector
from collector.store import queries
from collector.store.models import Device, Interval, Marker
from parawatt_proto import parawatt_pb2 as pb
from tests.collector.drive import MarkerSender
from tests.collector.test_collector_service import config

pytestmark = pytest.mark.slow

SPE = 3


def run_session(sender, run_id, epochs, stop_after=None, status=pb.RUN_STATUS_COMPLETED,
                on_step=None, step_s=0.1):  # fmt: skip
    """One process lifetime of a rank: RUN_START .. RUN_END; the last epoch stops after
    stop_after steps when given (no EPOCH_END: the run was interrupted there)."""
    cfg = pb.RunConfig(world_size=1, nodes=1, model="resnet50", dataset="synthetic",
                       global_batch_size=8, local_batch_size=8, epochs=2, steps_per_epoch=SPE,
                       device_name="x86_64")  # fmt: skip
    start = sender.send(pb.RUN_START, run_id, config=cfg, metrics={"start_epoch": epochs[0]})
    for e in epochs:
        sender.send(pb.EPOCH_START, run_id, epoch=e)
        for k in range(SPE if stop_after is None or e != epochs[-1] else stop_after):
            step = e * SPE + k
            sender.send(pb.STEP_START, run_id, epoch=e, step=step)
            time.sleep(step_s)
            sender.send(pb.STEP_END, run_id, epoch=e, step=step)
            if on_step:
                on_step(step)
            time.sleep(0.03)
        if stop_after is None or e != epochs[-1]:
            sender.send(pb.EPOCH_END, run_id, epoch=e, metrics={"loss": 1.0 / (e + 1)})
    end = sender.send(pb.RUN_END, run_id, status=status, metrics={"status_code": float(status)})
    return start, end


def rows(engine, *cols_where):
    with engine.connect() as conn:
        return conn.execute(select(*cols_where[:1]).where(*cols_where[1:])).all()


def test_resumed_run_restarting_collector(sim_daemon, tmp_path):
    cfg = config([sim_daemon.address], f"sqlite:///{tmp_path / 'r.db'}")
    collectors = [create_collector(cfg).start()]

    def restart(step: int) -> None:
        if step == 4:  # mid-session 2: a fresh collector must pick the new session up
            collectors[-1].close()
            collectors.append(create_collector(cfg).start())

    time.sleep(0.5)  # idle readings first
    sender = MarkerSender(sim_daemon.address)
    s1, e1 = run_session(sender, "res", [0, 1], stop_after=1, status=pb.RUN_STATUS_INTERRUPTED)
    time.sleep(1.0)  # the job is requeued and loads its checkpoint
    s2, e2 = run_session(sender, "res", [1], on_step=restart)
    sender.close()
    c = collectors[-1]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = rows(c.engine, Interval, Interval.kind == "run", Interval.end_ns == e2)
        if found:
            break
        time.sleep(0.1)
    assert c.flush()
    (run,) = rows(c.engine, Interval, Interval.kind == "run")
    steps = rows(c.engine, Interval, Interval.kind == "step")
    epochs = rows(c.engine, Interval, Interval.kind == "epoch")
    (uuid,) = rows(c.engine, Device.uuid, Device.id == run.device_id)[0]
    n_markers = len(rows(c.engine, Marker))
    summary = queries.run_summary(c.engine, "res")
    c.close()

    truth = sim_daemon.backend.true_energy_j
    assert (run.start_ns, run.end_ns) == (s1, e2) and "resumed" in run.flags
    assert abs(run.energy_j - truth(uuid, s1, e1) - truth(uuid, s2, e2)) <= run.uncertainty_bound_j
    assert run.duration_s == pytest.approx((e1 - s1 + e2 - s2) / 1e9)
    assert sorted(s.step for s in steps) == list(range(6))  # step 3 ran twice, stored once
    (step3,) = [s for s in steps if s.step == 3]
    assert step3.start_ns > s2
    for s in steps:
        assert abs(s.energy_j - truth(uuid, s.start_ns, s.end_ns)) <= s.uncertainty_bound_j + 0.01
    assert sorted(e.epoch for e in epochs) == [0, 1]
    # identities: run start/end, 2 epochs x start/end, 6 steps x start/end
    assert n_markers == 2 + 4 + 12
    assert summary.status == "completed" and summary.end_ns == e2
    assert summary.duration_s == pytest.approx((e1 - s1 + e2 - s2) / 1e9)
    assert summary.steps == 6 and summary.epochs == 2 and "partial" not in summary.flags
    assert summary.hardware == sim_daemon.backend.params.name  # the measured device's name
