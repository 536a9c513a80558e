"""Sim sensor modes: a part-time sensor, a 50 ms counter, a GPU that never idles between runs.
Time is driven by the test (read(now_ns) and markers at chosen times): deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from parawatt_proto.convert import device_pb, device_rec
from parawatt_proto.records import MarkerRec
from power_daemon.backends.sim import SimBackend
from power_daemon.config import SimParams
from power_daemon.errors import ConfigError

T0 = 1_800_000_000_000_000_000
MS = 1_000_000


# Round power levels of our own, so the numbers below do not follow the default H100 table.
LEVELS = {"idle_w": 60.0, "run_w": 90.0, "busy_w": 300.0, "power_limit_w": 400.0}


def backend(**params) -> SimBackend:
    params = SimParams(**(LEVELS | {"noise_w": 0.0, "ramp_tau_s": 0.002} | params))
    return SimBackend(1, params, hostname="h", seed=1, start_ns=T0)


def mark(b: SimBackend, kind: str, t: int) -> None:
    b.on_marker(MarkerRec("run", 0, kind, 0, 0, t, b.devices()[0].uuid), t)


def square_wave(b: SimBackend, seconds: float, read_every_ms: int = 5):
    """A run whose steps fill the first half of every 100 ms counter window (phase-locked)."""
    mark(b, "run_start", T0)
    out = []
    for k in range(int(seconds * 1000 / read_every_ms)):
        t = T0 + k * read_every_ms * MS
        phase = (t - T0) % (100 * MS)
        if phase == 0:
            mark(b, "step_start", t)
        elif phase == 50 * MS:
            mark(b, "step_end", t)
        out.append((t, b.read(t)[0]))
    return out


@pytest.mark.parametrize("coverage", [1.0, 0.25])
def test_part_time_sensor_misreads_a_phase_locked_load(coverage):
    b = backend(coverage_fraction=coverage)
    rows = square_wave(b, 3.0)
    uuid = b.devices()[0].uuid
    (t1, s1), (t2, s2) = rows[100], rows[-1]  # counter values at two ticks' readings
    a, z = b.counter_tick_ns(t1), b.counter_tick_ns(t2)
    truth = b.true_energy_j(uuid, a, z)
    reported = s2.energy_j - s1.energy_j
    if coverage == 1.0:
        assert reported == pytest.approx(truth, abs=0.01)
        assert not b.devices()[0].partial_coverage
    else:  # sees only the busy first quarter of each window: ~300 W instead of ~195 W
        assert reported > 1.4 * truth
        assert b.devices()[0].partial_coverage
        instant = [s.power_w for t, s in rows[100:]]
        assert min(instant) > 250  # instant power comes from the same blind sensor
        assert s2.power_avg_w > 250


@pytest.mark.parametrize("period_s", [0.0, 1e-12, 1e-4, 11.0, float("inf"), float("nan")])
def test_a_counter_period_out_of_bounds_is_a_config_error(period_s):
    """1e-12 s made a deque of a trillion ticks and every reading divide by zero; inf and nan
    failed in round()."""
    with pytest.raises(ConfigError, match="period"):
        SimParams(counter_period_s=period_s)


def test_counter_period_of_50_ms():
    b = backend(counter_period_s=0.05)
    mark(b, "run_start", T0)
    times, values = [], []
    for k in range(400):
        t = T0 + k * 2 * MS
        times.append(t)
        values.append(b.read(t)[0].energy_j)
    changes = np.flatnonzero(np.diff(values)) + 1
    spacing = np.diff(np.array(times)[changes]) / 1e6
    assert np.all(spacing == 50) and b.devices()[0].energy_counter_update_s == 0.05


def test_a_gpu_that_never_idles_between_runs():
    b = backend(background_w=250.0)
    before = b.read(T0 + 500 * MS)[0]
    assert before.power_w == pytest.approx(310.0, abs=1) and before.gpu_util_pct == 90.0
    mark(b, "run_start", T0 + 600 * MS)
    inside = b.read(T0 + 1_500 * MS)[0]
    assert inside.power_w == pytest.approx(90.0, abs=1) and inside.gpu_util_pct == 3.0
    mark(b, "run_end", T0 + 1_600 * MS)
    after = b.read(T0 + 2_500 * MS)[0]
    assert after.power_w == pytest.approx(310.0, abs=1) and after.sm_clock_mhz > 1000


def test_sensor_facts_reach_the_wire():
    d = backend(coverage_fraction=0.25).devices()[0]
    back = device_rec(device_pb(0, d))
    assert back.partial_coverage and back.sensor_method == "sim: configured"
    assert back.instant_power_lag_s is None


@pytest.mark.parametrize("bad", [{"coverage_fraction": 0.0}, {"background_w": -1.0}])
def test_bad_sim_modes_are_refused(bad):
    with pytest.raises(ConfigError):
        SimParams(**bad)
