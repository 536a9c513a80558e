"""End to end: sim daemon + collectors + 2-rank torchrun training of a tiny ResNet50.

One training feeds three collectors at once: SQLite, PostgreSQL, and a SQLite one that is
closed and restarted twice mid-run. Each must hold an interval with energy for every step of
every rank, epochs that equal their steps plus the gaps between them, and energies matching the
sim's exact integral.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from collector.config import CollectorConfig
from collector.energy.counter import PHASE_HISTORY_S
from collector.energy.timeline import DeviceTimeline, Sample
from collector.service import create_collector
from collector.store.models import Device, Interval, Marker, Reading, Run
from tests.collector.drive import wait_for_intervals
from tests.support.torchrun import run_torchrun
from tests.trainer.trainer_args import RESNET

pytestmark = pytest.mark.slow
EPOCHS, STEPS = 2, 5


def config(address: str, db_url: str) -> CollectorConfig:
    return CollectorConfig(daemons=(address,), db_url=db_url, metrics_listen=None,
                           late_bound_s=1.0, flush_interval_s=0.1, idle_min_s=1.0,
                           idle_bucket_s=1.0)  # fmt: skip


def fetch(engine, model, *where):
    with engine.connect() as conn:
        return conn.execute(select(model).where(*where)).all()


@pytest.fixture
def maybe_pg_url(request):
    try:
        return request.getfixturevalue("pg_url")
    except pytest.skip.Exception:
        return None


def test_training_energy_per_step_epoch_and_run(sim_daemon, tmp_path, maybe_pg_url):
    urls = {
        "sqlite": f"sqlite:///{tmp_path / 'a.db'}",
        "restarted": f"sqlite:///{tmp_path / 'c.db'}",
    }
    if maybe_pg_url:
        urls["postgres"] = maybe_pg_url
    collectors = {
        k: create_collector(config(sim_daemon.address, u)).start() for k, u in urls.items()
    }
    stop = threading.Event()
    restarts: list[int] = []

    def restart_twice() -> None:  # close and reopen the third collector while training runs
        watch = collectors["sqlite"].engine
        for after_steps in (4, 12):  # of 2 ranks x 10 steps: early in epoch 0, then in epoch 1
            while len(fetch(watch, Marker, Marker.kind == "step_end")) < after_steps:
                if stop.wait(0.05):
                    return
            restarts.append(time.time_ns())
            collectors["restarted"].close()
            cfg = config(sim_daemon.address, urls["restarted"])
            collectors["restarted"] = create_collector(cfg).start()

    # the counter's update moments are pinned once PHASE_HISTORY_S of readings lie behind them:
    # the 0.5 % checked below is for that steady state (in a daemon's first seconds, unpinned
    # at 21.7 ms, a 1.5 s epoch erred 0.58 % once in CI; the 95 % interval says 1.6-2.1 % there)
    started = sim_daemon.daemon.core.started_ns
    while time.time_ns() - started < (PHASE_HISTORY_S + 1.0) * 1e9:
        time.sleep(0.1)
    restarter = threading.Thread(target=restart_twice)
    restarter.start()
    try:
        proc = run_torchrun(
            ["trainer", "train", "--quiet", *RESNET, "--epochs", str(EPOCHS),
             "--steps-per-epoch", str(STEPS), "--global-batch-size", "4",
             "--daemon", sim_daemon.address, "--run-id", "e2e-run"],
            nproc=2, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        stop.set()
        restarter.join()
        for name, c in collectors.items():
            assert wait_for_intervals(c.engine, "e2e-run", "run", 2) == 2, name
            c.flush()
        for name, c in collectors.items():
            check_database(c.engine, sim_daemon.backend, name)
        (run,) = fetch(collectors["sqlite"].engine, Run)
        assert len(restarts) == 2 and all(run.start_ns < t < run.end_ns for t in restarts)
    finally:
        stop.set()
        restarter.join()
        for c in collectors.values():
            c.close()


def check_database(engine, backend, name: str) -> None:
    uuid = {d.id: d.uuid for d in fetch(engine, Device)}
    steps = fetch(engine, Interval, Interval.kind == "step")
    epochs = fetch(engine, Interval, Interval.kind == "epoch")
    runs = fetch(engine, Interval, Interval.kind == "run")
    keys = [(i.rank, i.step) for i in steps]
    assert sorted(keys) == [(r, s) for r in range(2) for s in range(EPOCHS * STEPS)], name
    assert len(epochs) == 2 * EPOCHS and len(runs) == 2, name
    assert all(i.energy_j is not None and i.energy_j > 0 for i in steps + epochs + runs), name
    assert len(fetch(engine, Marker)) == 2 * (2 + 2 * EPOCHS + 2 * EPOCHS * STEPS), name
    (run,) = fetch(engine, Run)
    assert run.status == "completed" and run.world_size == 2, name

    for e in epochs:  # per-epoch energy against the sim's exact integral
        truth = backend.true_energy_j(uuid[e.device_id], e.start_ns, e.end_ns)
        assert e.energy_j == pytest.approx(truth, rel=0.005), (name, e.rank, e.epoch)
        # the in-process sim daemon's sampler shares the GIL with two collectors and the 2
        # cores with 2 training ranks: holes (> 5x the median spacing) are flagged "gap" and
        # lower the coverage (0.65 seen in CI), while the counter bridges them (the energy is
        # checked above); the coverage bound only says readings came most of the time
        assert e.coverage > 0.3 and set(e.flags.split(",")) <= {"", "gap"}, name

    # each epoch = its steps + the gaps between them, within the counter's resolution; the
    # gaps from a model of the same readings, the update phase pinned from the same history
    history_ns = round((PHASE_HISTORY_S + 2.0) * 1e9)
    for e in epochs:
        readings = fetch(engine, Reading, Reading.device_id == e.device_id,
                         Reading.time_ns >= e.start_ns - history_ns,
                         Reading.time_ns <= e.end_ns + 2_000_000_000)  # fmt: skip
        timeline = DeviceTimeline()
        timeline.extend(Sample(r.time_ns, r.power_w, r.energy_j) for r in readings)
        mine = sorted(
            (s for s in steps if s.rank == e.rank and s.epoch == e.epoch), key=lambda s: s.step
        )
        bounds = [e.start_ns] + [t for s in mine for t in (s.start_ns, s.end_ns)] + [e.end_ns]
        gaps = sum(
            timeline.interval(a, b).energy_j for a, b in zip(bounds[::2], bounds[1::2], strict=True)
        )
        assert e.energy_j == pytest.approx(sum(s.energy_j for s in mine) + gaps, abs=0.002), name
