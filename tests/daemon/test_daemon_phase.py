"""Sampling phase: readings that run free against the energy counter (calibrate.phase_spread),
the default interval that does, doctor's "sampling phase" check and the daemon's warning."""

from __future__ import annotations

import dataclasses
import logging
import re

import pytest

from power_daemon.backends.factory import build_backend
from power_daemon.calibrate import (
    LEAVE_OUT as LEAVE,
)
from power_daemon.calibrate import (
    MAX_PHASE_GAP,
    counter_periods,
    phase_problem,
    phase_spread,
    phase_warnings,
    spread_interval_ms,
    tuned_interval_ms,
)
from power_daemon.cli import _config, doctor, serve
from power_daemon.config import DEFAULT_INTERVAL_MS, DaemonConfig, SimParams
from power_daemon.daemon import Daemon
from power_daemon.model import DeviceKind, DeviceSpec
from power_daemon.serve.server import create_server
from power_daemon.tools.doctor import DEGRADED, OK, run_checks

LOCKED_20 = (
    "readings every 20 ms fall at the same phase of each 100 ms counter update: update moments "
    "known only to +-10 ms; use --interval-ms 21.7 (or leave --interval-ms out: serve picks it)"
)


@pytest.mark.parametrize(
    ("interval_ms", "period_ms", "locked"),
    [(20, 100, True), (10, 100, True), (25, 100, True), (100 / 3, 100, True),
     (33.3, 100, True), (21.7, 100, False), (21.7, 50, False), (13, 100, False)],
)  # fmt: skip
def test_phase_spread_is_one_when_locked_and_small_when_free(interval_ms, period_ms, locked):
    gap = phase_spread(interval_ms / 1e3, period_ms / 1e3)
    assert 0 < gap <= 1.0
    assert (gap > MAX_PHASE_GAP) is locked
    if interval_ms in (20, 10, 25, 100 / 3):  # divides the period: one phase, round-off or not
        assert gap == 1.0


def test_phase_spread_figures():
    # 100 ms = 4 x 21.7 + 13.2: the updates of one second fall at 10 phases, 0.9 or 3.8 ms apart
    assert phase_spread(0.0217, 0.1) == pytest.approx(3.8 / 21.7, abs=1e-6)
    # 33.3 ms runs 0.1 ms a period off the counter: 10 phases within 0.9 ms, nearly locked
    assert phase_spread(0.0333, 0.1) == pytest.approx(1 - 0.9 / 33.3, abs=1e-6)
    assert phase_spread(0.0217, 0.1, window_s=0.05) == 1.0  # one update: one phase


def test_phase_problem_says_what_is_wrong_and_the_fix():
    assert phase_problem(0.0217, 0.1) is None
    assert phase_problem(0.02, 0.1) == LOCKED_20
    near = "fall at nearly the same phase of each 100 ms counter update: update moments known"
    assert f"{near} only to +-16.2 ms" in phase_problem(0.0333, 0.1)
    slow = phase_problem(0.06, 0.1)
    assert slow == (
        "readings every 60 ms are more than half the 100 ms counter period: update moments "
        "cannot be pinned; use --interval-ms 21.7 (or leave --interval-ms out: serve picks it)"
    )
    assert "use --interval-ms 7.72 " in phase_problem(0.0217, 0.02)  # a fast counter


@pytest.mark.parametrize("period_ms", [5, 20, 50, 97, 97.6, 98, 100, 101.5, 102])
def test_the_spread_interval_pins_the_counter(period_ms):
    """The interval serve tunes to (and the fix names) pins the updates of any counter period,
    also one measured 1 ms off (calibration under load); near the default where it can be."""
    ms = spread_interval_ms(period_ms / 1e3)
    for off_ms in (-1.0, 0.0, 1.0):
        assert phase_problem(ms / 1e3, (period_ms + off_ms) / 1e3) is None
    if period_ms >= 50:
        assert abs(ms - DEFAULT_INTERVAL_MS) < 2.5


def gpu(index: int, period_s: float | None, method: str = "") -> DeviceSpec:
    return DeviceSpec(f"GPU-{index}", "gpu", DeviceKind.GPU, index, has_energy_counter=True,
                      energy_counter_update_s=period_s, sensor_method=method)  # fmt: skip


def test_counter_periods_group_by_whole_ms_and_say_where_the_period_came_from():
    devices = [
        gpu(0, 0.10031, "measured: polled 1 s"), gpu(1, 0.09989, "measured: polled 1 s"),
        gpu(2, 0.05, "sim: configured"), gpu(3, None, "assumed: too few"),
        dataclasses.replace(gpu(4, 0.1), has_energy_counter=False),
        DeviceSpec("cpu", "package", DeviceKind.CPU_PACKAGE, 0, has_energy_counter=True,
                   energy_counter_update_s=0.001),
    ]  # fmt: skip
    assert counter_periods(devices) == {
        (0.1001, "measured"): [0, 1], (0.05, "backend's figure"): [2], (0.1, "assumed"): [3]
    }  # fmt: skip
    near = "readings every 20 ms fall at nearly the same phase of each 100.1 ms counter update"
    half = "readings every 20 ms fall at too few phases of successive 50 ms counter updates"
    assert phase_warnings(0.02, devices) == [
        f"gpu 0, 1: {near}: update moments known only to +-9.6 ms; use --interval-ms 21.7 {LEAVE}",
        f"gpu 2: {half}: update moments known only to +-5 ms; use --interval-ms 21.7 {LEAVE}",
        f"gpu 3: {LOCKED_20}",
    ]
    assert phase_warnings(0.0217, devices) == []


def test_the_default_interval_runs_free():
    assert DaemonConfig().interval_ms == DEFAULT_INTERVAL_MS == 21.7
    assert DaemonConfig().interval_ns == 21_700_000
    for command in (serve, doctor):
        option = next(p for p in command.params if p.name == "interval_ms")
        # not given: the default, tuned to the counter calibration measures
        assert option.default is None and "every phase" in option.help
        assert _config(**_defaults(command)).tune_interval
        assert _config(**{**_defaults(command), "interval_ms": 20.0}).interval_ms == 20.0
        assert not _config(**{**_defaults(command), "interval_ms": 20.0}).tune_interval


def _defaults(command) -> dict:
    """The options a command passes to _config when none is given (its DaemonConfig ones)."""
    names = {f.name for f in dataclasses.fields(DaemonConfig)} | {
        "rapl",
        "sim_coverage",
        "sim_background_w",
        "sim_counter_ms",
        "marker_socket",
    }
    return {p.name: p.default for p in command.params if p.name in names}


def test_tuned_interval_keeps_the_default_where_it_spreads_and_moves_where_not():
    measured = "measured: polled 1.5 s"
    at_100 = [gpu(0, 0.1002, measured), gpu(1, 0.0999, measured)]
    assert tuned_interval_ms(21.7, at_100) == 21.7
    at_98 = [gpu(0, 0.098, measured), gpu(1, 0.0981, measured)]
    tuned = tuned_interval_ms(21.7, at_98)
    assert tuned != 21.7 and abs(tuned - 21.7) < 1.0
    assert phase_problem(tuned / 1e3, 0.098) is None
    # periods nobody measured are not tuned to
    assert tuned_interval_ms(21.7, [gpu(0, 0.098, "sim: configured"), gpu(1, None)]) == 21.7
    # a counter measured to advance every 2 ms (updated on every read): no kHz sampling
    assert tuned_interval_ms(21.7, [gpu(0, 0.002, measured)]) == 21.7
    assert phase_warnings(0.0217, [gpu(0, 0.002, measured)])  # ... and the warning says so


def test_serve_without_an_interval_tunes_it_to_the_measured_counter(caplog):
    """A sim GPU whose counter advances every 98 ms: 21.7 ms would put its updates at two
    phases in turn, so the daemon samples at the interval that spreads them, says so, and
    reports it (NodeInfo.interval_ns); a chosen interval is kept."""
    caplog.set_level(logging.INFO, logger="power_daemon")
    cfg = dataclasses.replace(sim_config(DEFAULT_INTERVAL_MS, counter_period_s=0.098),
                              tune_interval=True, calibrate_s=1.0)  # fmt: skip
    backend = build_backend(cfg)
    try:
        core = Daemon(cfg, backend, "n", lambda *a: b"")
    finally:
        backend.close()
    assert core.config.interval_ms != DEFAULT_INTERVAL_MS
    assert phase_problem(core.config.interval_ms / 1e3, 0.098) is None
    assert core.sampler.interval_ns == round(core.config.interval_ms * 1e6)
    assert f"sampling every {core.config.interval_ms:g} ms, not 21.7" in caplog.text
    assert "sampling phase:" not in caplog.text  # no warning: the tuned interval pins them
    chosen = dataclasses.replace(cfg, tune_interval=False)
    backend = build_backend(chosen)
    try:
        kept = Daemon(chosen, backend, "n", lambda *a: b"")
    finally:
        backend.close()
    assert kept.config.interval_ms == DEFAULT_INTERVAL_MS
    assert "sampling phase: gpu 0, 1: readings every 21.7 ms" in caplog.text


def sim_config(interval_ms: float, **sim) -> DaemonConfig:
    return DaemonConfig(backend="sim", sim_devices=2, rapl="off", interval_ms=interval_ms,
                        sim=SimParams(**sim))  # fmt: skip


MEASURED_100 = re.compile(r"counter every (99\.[5-9]|100(\.[0-5])?) ms \(measured; gpu 0, 1\)")


@pytest.mark.parametrize(
    ("interval_ms", "verdict", "fix"),
    [(21.7, OK, ""), (20, DEGRADED, "same phase of each"), (60, DEGRADED, "more than half the")],
)
def test_doctor_checks_the_sampling_phase_on_the_sim(interval_ms, verdict, fix):
    checks = run_checks(sim_config(interval_ms), calibrate_s=1.0, jitter_s=0.2)
    phase = [c for c in checks if c.item.startswith("sampling phase")]
    assert len(phase) == 1  # both GPUs share one measured period: one line
    check = phase[0]
    assert check.item == "sampling phase" and check.verdict == verdict, check
    assert fix in check.fix and (check.fix == "") is (verdict == OK)
    assert "use --interval-ms 21.7" in check.fix or verdict == OK
    assert check.detail.startswith(f"readings every {interval_ms:g} ms, counter every ")
    assert MEASURED_100.search(check.detail), check.detail  # the sim's 100 ms, measured
    assert "largest phase gap" in check.detail and "of the interval)" in check.detail


def test_doctor_with_a_50_ms_counter_and_the_default():
    checks = run_checks(sim_config(DEFAULT_INTERVAL_MS, counter_period_s=0.05), 1.0, 0.2)
    check = next(c for c in checks if c.item == "sampling phase")
    assert check.verdict == OK and "(measured; gpu 0, 1)" in check.detail


def test_doctor_says_where_an_unmeasured_period_came_from():
    checks = run_checks(sim_config(20), calibrate_s=0.0, jitter_s=0.2)  # calibration off
    check = next(c for c in checks if c.item == "sampling phase")
    assert check.verdict == DEGRADED and check.fix == LOCKED_20
    assert "counter every 100 ms (backend's figure; gpu 0, 1)" in check.detail


def daemon_warnings(caplog, **config) -> list[str]:
    caplog.clear()
    caplog.set_level(logging.INFO, logger="power_daemon")
    config = DaemonConfig(listen="127.0.0.1:0", backend="sim", rapl="off", **config)
    server, _ = create_server(config)
    server.close()
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_daemon_warns_once_at_start_when_the_interval_is_locked(caplog):
    assert daemon_warnings(caplog, interval_ms=20) == [f"sampling phase: gpu 0, 1: {LOCKED_20}"]
    measured = daemon_warnings(caplog, interval_ms=20, calibrate_s=1.0)
    assert len(measured) == 1 and "same phase of each" in measured[0]
    slow = daemon_warnings(caplog, interval_ms=60)
    assert len(slow) == 1 and "more than half the 100 ms counter period" in slow[0]
    assert daemon_warnings(caplog, calibrate_s=1.0) == []  # the default
    assert daemon_warnings(caplog, interval_ms=21.7) == []
