"""Idle power and active energy against the sim daemon, in the sweep's conditions.

Runs of a few tens of ms (tiny models on a CPU) are over before the trainer's background sender
delivers their markers; the sim changes power only for readings not yet taken, so the GPU never
leaves idle during such a run. Its active energy (energy − idle × duration) is then zero up to
the noise: slightly negative half of the time, always within the interval's uncertainty. The idle
measured before it must be the device's idle, not readings of the run just before it.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from collector.service import create_collector
from collector.store.models import Device, Interval, RunRank
from parawatt_proto import parawatt_pb2 as pb
from power_daemon.config import SimParams
from tests.collector.drive import MarkerSender, run_job, wait_for_intervals
from tests.collector.test_collector_service import config

pytestmark = pytest.mark.slow
IDLE_W = SimParams().idle_w  # the default sim GPU's idle level; noise 3 W RMS


def send_after_the_fact(address: str, run_id: str, duration_ns: int) -> tuple[int, int]:
    """A whole short run's markers in one message, sent once the run is over."""
    t0 = time.time_ns()
    times = [t0 + duration_ns * k // 5 for k in range(6)]
    kinds = [pb.RUN_START, pb.EPOCH_START, pb.STEP_START, pb.STEP_END, pb.EPOCH_END, pb.RUN_END]
    cfg = pb.RunConfig(world_size=1, nodes=1, model="fourcastnet", global_batch_size=4,
                       local_batch_size=4, device_name="x86_64")  # fmt: skip
    markers = [
        pb.Marker(run_id=run_id, kind=k, time_ns=t, config=cfg if k == pb.RUN_START else None,
                  status=pb.RUN_STATUS_COMPLETED if k == pb.RUN_END else 0)
        for k, t in zip(kinds, times, strict=True)
    ]  # fmt: skip
    time.sleep(duration_ns / 1e9 + 0.05)  # the sender's lag: the daemon sees them afterwards
    sender = MarkerSender(address)
    sender.stub.SendMarkers(pb.MarkerBatch(markers=markers), timeout=5)
    sender.close()
    return times[0], times[-1]


def test_short_runs_right_after_a_busy_one_get_idle_and_active_right(sim_daemon, tmp_path):
    cfg = config([sim_daemon.address], f"sqlite:///{tmp_path / 'idle.db'}")
    with create_collector(cfg) as c:
        time.sleep(2.5)  # a full idle window (2 s) of readings
        # back to back: the busy run fills most of the next runs' idle window (its median
        # would be the busy run's power if its readings counted as idle)
        run_job(sim_daemon.address, "busy", epochs=1, steps=8, step_s=0.15)
        time.sleep(0.3)
        short = [send_after_the_fact(sim_daemon.address, f"short-{k}", 40_000_000)
                 for k in range(3)]  # fmt: skip
        assert wait_for_intervals(c.engine, "short-2", "run", 1) == 1
        assert c.flush()
        with c.engine.connect() as conn:
            runs = {i.run_id: i for i in conn.execute(
                select(Interval).where(Interval.kind == "run"))}  # fmt: skip
            idle = dict(conn.execute(select(RunRank.run_id, RunRank.idle_power_w)).all())
            uuid = conn.scalar(select(Device.uuid).where(Device.id == runs["busy"].device_id))
    assert runs["busy"].active_energy_j > 0.5 * runs["busy"].energy_j  # busy steps vs idle
    for k, (start, end) in enumerate(short):
        run = runs[f"short-{k}"]
        # from the ~0.5 s of idle readings left in the window: noise, never the busy run's W
        assert idle[f"short-{k}"] == pytest.approx(IDLE_W, abs=5.0)
        truth = sim_daemon.backend.true_energy_j(uuid, start, end)
        assert abs(run.energy_j - truth) <= run.uncertainty_bound_j
        assert truth == pytest.approx(IDLE_W * run.duration_s, rel=0.2)  # the GPU idled
        assert abs(run.active_energy_j) <= run.uncertainty_bound_j  # zero up to the noise
