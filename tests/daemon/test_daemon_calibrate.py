"""Sensor calibration: measured counter period, resolution and instant-power lag, the
partial-coverage table, and the measured facts in the daemon's DeviceInfo."""

from __future__ import annotations

import numpy as np
import pytest

from power_daemon.calibrate import measure, partial_coverage_arch
from power_daemon.config import DaemonConfig, SimParams
from power_daemon.serve import codec
from power_daemon.serve.server import create_server


def synthetic(period_s=0.05, lag_s=0.03, poll_s=0.002, seconds=1.5, offset_j=123456.789):
    """A counter updating every period_s (whole mJ) under a 150 ms square wave, and instant
    power that shows the same wave lag_s late."""
    t = np.arange(0.0, seconds, poll_s)
    fine = np.arange(0.0, seconds + 0.2, 1e-4)
    power = np.where((fine % 0.15) < 0.075, 300.0, 80.0)
    cum = np.cumsum(power) * 1e-4
    ticks = np.floor(t / period_s) * period_s
    counter = offset_j + np.floor(np.interp(ticks, fine, cum) * 1000) / 1000
    instant = np.interp(np.maximum(t - lag_s, 0), fine, power)
    return (t * 1e9).astype(np.int64), counter, instant


def test_measures_period_resolution_and_lag():
    t, c, p = synthetic()
    facts = measure(list(t), list(c), list(p))
    assert facts.update_s == pytest.approx(0.05, abs=0.003)
    assert facts.resolution_j == pytest.approx(0.001)
    assert facts.instant_power_lag_s == pytest.approx(0.03, abs=0.011)
    assert facts.updates >= 25


def test_steady_power_leaves_the_lag_unknown_and_few_updates_no_period():
    t, c, _ = synthetic()
    facts = measure(list(t), list(c), [100.0 + (k % 3) * 0.1 for k in range(len(t))])
    assert facts.instant_power_lag_s is None
    few = measure(list(t[:40]), list(c[:40]), [None] * 40)
    assert few.update_s is None and few.updates < 4


@pytest.mark.parametrize(
    ("name", "partial"),
    [("NVIDIA A100-SXM4-80GB", True), ("NVIDIA H100 80GB HBM3", True), ("NVIDIA H200", True),
     ("NVIDIA GH200 480GB", True), ("Tesla V100-SXM2-32GB", False), ("NVIDIA L40S", False)],
)  # fmt: skip
def test_partial_coverage_table(name, partial):
    assert partial_coverage_arch(name) is partial


def test_the_daemon_reports_measured_sensor_facts():
    sim = SimParams(counter_period_s=0.05, coverage_fraction=0.25)
    config = DaemonConfig(listen="127.0.0.1:0", backend="sim", rapl="off", calibrate_s=1.0,
                          sim=sim)  # fmt: skip
    server, _ = create_server(config)
    with server:
        info = codec.node_info(server.core)
    for d in info.devices:
        assert d.energy_counter_update_s == pytest.approx(0.05, abs=0.004)
        assert d.energy_counter_resolution_j == pytest.approx(0.001)
        assert d.sensor_method.startswith("measured: polled 1 s")
        assert d.partial_coverage  # the sim says so (not the H100 name: it is a sim)
    plain = DaemonConfig(listen="127.0.0.1:0", backend="sim", rapl="off", calibrate_s=0.5)
    server, _ = create_server(plain)
    with server:
        d = codec.node_info(server.core).devices[0]
    assert not d.partial_coverage and d.energy_counter_update_s == pytest.approx(0.1, abs=0.006)
