"""Collector + sim daemon on loopback: streaming, intervals vs the sim's truth, restarts."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from collector.config import CollectorConfig
from collector.energy.counter import PHASE_HISTORY_S
from collector.service import create_collector
from collector.store.models import Device, Interval, Marker, Reading, StreamGap
from collector.store.queries import run_summary
from power_daemon.config import SimParams
from tests.collector.drive import run_job, wait_for_intervals


def config(daemons, db_url, **kw) -> CollectorConfig:
    base = dict(daemons=tuple(daemons), db_url=db_url, metrics_listen="127.0.0.1:0",
                late_bound_s=1.0, flush_interval_s=0.1, idle_window_s=2.0, idle_guard_s=0.2,
                idle_update_s=1.0, chunk_s=1.0, idle_min_s=1.0, idle_bucket_s=1.0)  # fmt: skip
    return CollectorConfig(**{**base, **kw})


def wait_for_idle(c, devices: int, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(c.live.idle_w) >= devices:
            return True
        time.sleep(0.05)
    return False


def rows(engine, model, *where):
    with engine.connect() as conn:
        return conn.execute(select(model).where(*where)).all()


def measured_job(daemon, tmp_path, run_id: str, steps: int):
    """One 2-epoch job on `daemon` through a collector, once PHASE_HISTORY_S of readings lie
    behind the daemon's start (the counter's update moments are pinned from then on; in a
    daemon's first seconds, unpinned at 21.7 ms, sub-second epochs err up to ~2 %):
    (steps, epochs, run, devices) as stored, and the true energy of an interval."""
    cfg = config([daemon.address], f"sqlite:///{tmp_path / 'p.db'}")
    with create_collector(cfg) as c:
        # idle readings before the run give the idle power (1 s averages): wait for it, not
        # for a fixed time (a loaded machine starts the daemon's sampling late)
        assert wait_for_idle(c, len(daemon.backend.devices()))
        started = daemon.daemon.core.started_ns
        while time.time_ns() - started < (PHASE_HISTORY_S + 1.0) * 1e9:
            time.sleep(0.1)
        run_job(daemon.address, run_id, epochs=2, steps=steps)
        assert wait_for_intervals(c.engine, run_id, "run", 1) == 1
        c.flush()
        step_rows = rows(c.engine, Interval, Interval.kind == "step")
        epochs = rows(c.engine, Interval, Interval.kind == "epoch")
        (run,) = rows(c.engine, Interval, Interval.kind == "run")
        devices = rows(c.engine, Device)
    uuid = {d.id: d.uuid for d in devices}
    assert sorted(s.step for s in step_rows) == list(range(2 * steps))

    def truth(i) -> float:
        return daemon.backend.true_energy_j(uuid[i.device_id], i.start_ns, i.end_ns)

    return step_rows, epochs, run, devices, truth


def test_intervals_match_the_sims_truth(sim_daemon, tmp_path):
    steps, epochs, run, _, truth = measured_job(sim_daemon, tmp_path, "run-a", steps=3)
    for i in steps + epochs + [run]:
        assert abs(i.energy_j - truth(i)) <= i.uncertainty_bound_j + 0.01, i.kind
        assert i.coverage == 1.0 and i.flags == ""
    for e in epochs:  # sub-second epochs here; the 0.5 % bound is checked on real training
        assert e.energy_j == pytest.approx(truth(e), rel=0.02)
    assert run.active_energy_j == pytest.approx(run.energy_j - 60.0 * run.duration_s, rel=0.05)


def test_part_time_sensor_intervals_hold_the_sims_truth(start_sim_daemon, tmp_path):
    """A part-time sensor (the first 25 % of each window, scaled: A100/H100/H200) end to end:
    the daemon says so in DeviceInfo, the collector takes each window's lag back and finalises
    an interval one counter update later; every interval holds the truth within its bound, the
    epochs and the run well within their 95 % interval."""
    daemon = start_sim_daemon(sim=SimParams(coverage_fraction=0.25))
    steps, epochs, run, devices, truth = measured_job(daemon, tmp_path, "run-p", steps=4)
    assert {d.partial_coverage for d in devices} == {True}
    for i in steps + epochs + [run]:
        assert abs(i.energy_j - truth(i)) <= i.uncertainty_bound_j + 0.01, i.kind
    for e in epochs + [run]:
        # sub-second epochs err 1-7 % here, at 0.13-0.67 of their 95 % interval (9 of them);
        # twice it (~4 sigma) cannot fail by chance
        assert abs(e.energy_j - truth(e)) <= 2.0 * e.uncertainty_j, (e.kind, e.energy_j)


@pytest.mark.slow
def test_collector_restart_mid_run_loses_and_duplicates_nothing(sim_daemon, db_url):
    cfg = config([sim_daemon.address], db_url)
    c = create_collector(cfg).start()
    restarted = []

    def restart(step: int) -> None:
        if step in (2, 6):  # close mid-epoch, start a new one on the same database
            restarted.append(step)
            c_old = restarted_collector[0]
            c_old.close()
            restarted_collector[0] = create_collector(cfg).start()

    restarted_collector = [c]
    run_job(sim_daemon.address, "run-r", epochs=2, steps=5, step_s=0.1, on_step=restart)
    c = restarted_collector[0]
    assert wait_for_intervals(c.engine, "run-r", "run", 1) == 1
    c.flush()
    steps = rows(c.engine, Interval, Interval.kind == "step")
    markers = rows(c.engine, Marker)
    readings_seqs = [r.seq for r in rows(c.engine, Reading)]
    c.close()
    assert restarted == [2, 6]
    assert sorted(s.step for s in steps) == list(range(10))  # no duplicate, none missing
    assert len(markers) == 2 + 2 * 2 + 10 * 2
    assert len(readings_seqs) == len(set(readings_seqs))
    assert max(readings_seqs) - min(readings_seqs) + 1 >= len(readings_seqs)


@pytest.mark.slow
def test_daemon_restart_is_recorded_as_a_boot_change(start_sim_daemon, tmp_path):
    d1 = start_sim_daemon(hostname="node-b")
    address, port = d1.address, d1.port
    cfg = config([address], f"sqlite:///{tmp_path / 'p.db'}", reconnect_backoff_s=(0.05, 0.2))
    with create_collector(cfg) as c:
        time.sleep(0.5)
        d1.daemon.close()
        time.sleep(0.3)
        d2 = start_sim_daemon(hostname="node-b", listen=f"127.0.0.1:{port}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not rows(c.engine, StreamGap):
            time.sleep(0.1)
        (gap,) = rows(c.engine, StreamGap)
        assert gap.kind == "boot_changed" and gap.previous_boot == d1.daemon.boot_id
        assert c.subscribers[0].health.boot_id == d2.daemon.boot_id
        assert c.subscribers[0].health.boot_changes_total == 1


@pytest.mark.slow
def test_items_the_daemon_lost_while_the_collector_was_down_are_a_gap(start_sim_daemon, tmp_path):
    # 2 GPUs sampled every ms overflow a 1000-item ring buffer in half a second
    d = start_sim_daemon(interval_ms=1.0, buffer_capacity=1000)
    cfg = config([d.address], f"sqlite:///{tmp_path / 'p.db'}")
    with create_collector(cfg):
        time.sleep(0.5)
    time.sleep(1.5)  # collector down: the daemon overwrites what it has not sent
    with create_collector(cfg) as c:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not rows(c.engine, StreamGap):
            time.sleep(0.1)
        (gap,) = rows(c.engine, StreamGap)
        assert c.live.daemons[0].missed_total == gap.items
    assert gap.kind == "missed" and gap.items > 1000 and gap.previous_boot is None


def test_two_ranks_on_one_gpu_count_it_once_in_sql_and_in_the_live_metrics(sim_daemon, db_url):
    """Two ranks whose local rank is the same (one GPU): each rank's interval holds the whole
    GPU's energy, and the run counts it once, flagged shared_device; the live Prometheus
    counter agrees with SQL (it added both ranks' run intervals, twice the GPU)."""
    from tests.collector.metrics.test_collector_metrics_energy import scrape

    with create_collector(config([sim_daemon.address], db_url)) as c:
        run_job(sim_daemon.address, "one-gpu", epochs=1, steps=3, ranks=(0, 1), gpu_of={0: 0, 1: 0})
        assert wait_for_intervals(c.engine, "one-gpu", "run", 2) >= 2
        c.pipeline._progress_ns = 0  # refresh run progress on the next poll
        c.flush()
        runs = rows(c.engine, Interval, Interval.kind == "run", Interval.run_id == "one-gpu")
        gpu_rows = [r for r in runs if r.device_id == runs[0].device_id]
        assert len(gpu_rows) == 2 and {r.rank for r in gpu_rows} == {0, 1}
        sql = run_summary(c.engine, "one-gpu")
        lowest = min(gpu_rows, key=lambda r: r.rank)
        assert sql.gpu_energy_j == pytest.approx(lowest.energy_j, rel=1e-12)
        assert "shared_device" in sql.flags
        live = scrape(c.metrics_port)["parawatt_run_energy_joules_total"]["one-gpu"][1]
        assert live == pytest.approx(sql.energy_j, rel=1e-9)
