"""Sim backend: exact energy, stepped counter, 1 s average, marker-driven power, temperature."""

import math

import pytest

from parawatt_proto.records import MarkerRec
from power_daemon.backends.sim import SimBackend, sim_uuid
from power_daemon.backends.simtrace import Noise, PowerTrace
from power_daemon.config import SimParams

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
S = 1_000_000_000


# Round power levels of our own, so the numbers below do not follow the default H100 table.
LEVELS = {"idle_w": 60.0, "run_w": 90.0, "busy_w": 300.0, "power_limit_w": 400.0}


def make(n=2, **params) -> SimBackend:
    return SimBackend(n, SimParams(**(LEVELS | params)), hostname="node-a", seed=7, start_ns=T0)


def mark(sim: SimBackend, kind: str, t_ns: int, device=0, rank=0) -> None:
    uuid = sim.devices()[device].uuid
    m = MarkerRec("run", rank, kind, 0, 0, t_ns, device_uuid=uuid)
    sim.on_marker(m, t_ns)


def numeric_integral(trace: PowerTrace, a: int, b: int, n: int = 50_000) -> float:
    h = (b - a) / n
    total = 0.5 * (trace.power_w(a) + trace.power_w(b))
    total += sum(trace.power_w(a + round(i * h)) for i in range(1, n))
    return total * h / 1e9


def test_trace_energy_is_the_exact_integral_of_its_power():
    import random

    trace = PowerTrace(T0, 60.0, 0.03, Noise(random.Random(1), 3.0))
    trace.set_target(T0 + 100 * MS, 300.0)
    trace.set_target(T0 + 113 * MS, 90.0)  # mid-ramp change
    trace.set_target(T0 + 400 * MS, 300.0)
    for a, b in [(T0, T0 + 600 * MS), (T0 + 95 * MS, T0 + 130 * MS), (T0 + 401 * MS, T0 + S)]:
        assert trace.integral_j(a, b) == pytest.approx(numeric_integral(trace, a, b), rel=1e-6)


def test_trace_cannot_change_the_past_and_refuses_times_before_it():
    trace = PowerTrace(T0, 60.0, 0.03)
    trace.set_target(T0 + 200 * MS, 300.0)
    assert trace.set_target(T0 + 100 * MS, 60.0) == T0 + 200 * MS  # clamped to the last change
    assert trace.power_w(T0 + 150 * MS) == pytest.approx(60.0)
    with pytest.raises(ValueError, match="before the trace history"):
        trace.energy_j(T0 - 1)


def test_uuids_are_deterministic_per_seed_node_and_index():
    a, b = make().devices(), make().devices()
    assert [d.uuid for d in a] == [d.uuid for d in b]
    assert a[0].uuid.startswith("sim-GPU-") and a[0].uuid != a[1].uuid
    assert sim_uuid(7, "node-b", 0) != a[0].uuid and sim_uuid(8, "node-a", 0) != a[0].uuid


def test_power_follows_step_markers_with_a_ramp():
    sim = make(noise_w=0.0)
    sim.read(T0 + 100 * MS)
    mark(sim, "run_start", T0 + 100 * MS)
    mark(sim, "step_start", T0 + 200 * MS)
    (p_ramp, p_other) = [s.power_w for s in sim.read(T0 + 230 * MS)]  # one tau into the ramp
    assert 90.0 < p_ramp < 300.0 and p_other == pytest.approx(60.0)
    busy = sim.read(T0 + 500 * MS)[0]
    assert busy.power_w == pytest.approx(300.0, abs=0.1) and busy.gpu_util_pct > 90
    mark(sim, "step_end", T0 + 500 * MS)
    assert sim.read(T0 + 800 * MS)[0].power_w == pytest.approx(90.0, abs=0.1)  # run still open
    mark(sim, "run_end", T0 + 800 * MS)
    assert sim.read(T0 + 1100 * MS)[0].power_w == pytest.approx(60.0, abs=0.1)


def test_a_late_marker_applies_from_the_last_reading_not_in_the_past():
    sim = make(noise_w=0.0)
    sim.read(T0 + 500 * MS)
    mark(sim, "step_start", T0 + 300 * MS)  # received "before" a reading already out
    uuid = sim.devices()[0].uuid
    assert sim.true_power_w(uuid, T0 + 499 * MS) == pytest.approx(60.0)
    assert sim.true_power_w(uuid, T0 + 900 * MS) == pytest.approx(300.0, abs=0.1)


def test_a_step_starts_at_the_marker_time_when_it_arrives_before_the_next_reading():
    sim = make(noise_w=0.0, ramp_tau_s=0.03)
    uuid = sim.devices()[0].uuid
    sim.read(T0 + 100 * MS)
    # Stamped by the rank at 110 ms, delivered with its batch at 135 ms, before the 140 ms read.
    m = MarkerRec("run", 0, "step_start", 0, 0, T0 + 110 * MS, device_uuid=uuid)
    sim.on_marker(m, T0 + 135 * MS)
    assert sim.true_power_w(uuid, T0 + 110 * MS) == pytest.approx(60.0)
    one_tau = 60.0 + (300.0 - 60.0) * (1 - math.exp(-1))
    assert sim.true_power_w(uuid, T0 + 140 * MS) == pytest.approx(one_tau)
    assert sim.read(T0 + 140 * MS)[0].power_w == pytest.approx(one_tau)


def test_a_marker_stamped_ahead_of_the_daemon_clock_takes_effect_at_receipt():
    sim = make(noise_w=0.0)
    uuid = sim.devices()[0].uuid
    sim.read(T0 + 100 * MS)
    m = MarkerRec("run", 0, "step_start", 0, 0, T0 + 3600 * S, device_uuid=uuid)
    sim.on_marker(m, T0 + 120 * MS)
    assert sim.true_power_w(uuid, T0 + 500 * MS) == pytest.approx(300.0, abs=0.1)


def test_late_batched_markers_never_rewrite_readings_already_emitted():
    """Readings every 20 ms, 30 ms steps whose markers arrive in batches every 50 ms: every
    emitted reading still agrees with the final exact trace, and the busy time is the steps'."""
    sim = make()
    uuid = sim.devices()[0].uuid
    offset = sim.counter_offset_j(uuid)
    pending: list[MarkerRec] = []
    emitted = []
    for t in range(0, 2 * S, MS):
        if t % (60 * MS) == 0:
            pending.append(MarkerRec("r", 0, "step_start", 0, 0, T0 + t, uuid))
        if t % (60 * MS) == 30 * MS:
            pending.append(MarkerRec("r", 0, "step_end", 0, 0, T0 + t, uuid))
        if t % (50 * MS) == 0:  # the rank's sender flushes its batch
            for m in pending:
                sim.on_marker(m, T0 + t)
            pending.clear()
        if t % (20 * MS) == 0:
            emitted.append((T0 + t, sim.read(T0 + t)[0]))
    for t, r in emitted:
        assert r.power_w == pytest.approx(sim.true_power_w(uuid, t), abs=1e-9)
        exact = offset + sim.true_energy_j(uuid, T0, sim.counter_tick_ns(t))
        assert exact - 0.001 <= r.energy_j <= exact + 1e-9
    # Busy half of the time: 180 W on average (a ramp shifts energy in time, it does not lose
    # it; the start of a step whose markers come after a reading is the one part cut short).
    assert sim.true_energy_j(uuid, T0, T0 + 2 * S) / 2 == pytest.approx(180.0, rel=0.02)


def test_counter_advances_in_steps_holding_the_exact_integral_at_each_tick():
    sim = make()
    uuid = sim.devices()[0].uuid
    offset = sim.counter_offset_j(uuid)
    for t in range(0, 3 * S, 20 * MS):
        if t == 700 * MS:
            mark(sim, "step_start", T0 + t)
        if t == 1900 * MS:
            mark(sim, "step_end", T0 + t)
        r = sim.read(T0 + t)[0]
        tick = sim.counter_tick_ns(T0 + t)
        assert tick == T0 + t - t % (100 * MS)
        exact = offset + sim.true_energy_j(uuid, T0, tick)
        assert exact - 0.001 <= r.energy_j <= exact + 1e-9  # floored to 1 mJ
    # Within one tick the counter holds still while the power moves.
    a, b = sim.read(T0 + 3 * S + 10 * MS)[0], sim.read(T0 + 3 * S + 90 * MS)[0]
    assert a.energy_j == b.energy_j and a.power_w != b.power_w


def test_counter_differences_give_interval_energy_and_match_the_power_integral():
    sim = make()
    uuid = sim.devices()[1].uuid
    mark(sim, "step_start", T0 + 250 * MS, device=1)
    first = sim.read(T0 + 100 * MS)[1]
    last = sim.read(T0 + 2100 * MS)[1]
    true = sim.true_energy_j(uuid, T0 + 100 * MS, T0 + 2100 * MS)
    assert last.energy_j - first.energy_j == pytest.approx(true, abs=0.002)
    assert true == pytest.approx(300.0 * 1.85 + 60.0 * 0.15, rel=0.02)


def test_power_avg_is_the_one_second_mean_updated_on_counter_ticks():
    sim = make()
    uuid = sim.devices()[0].uuid
    mark(sim, "step_start", T0 + 500 * MS)
    for t in range(0, 2 * S + 50 * MS, 10 * MS):
        r = sim.read(T0 + t)[0]
    tick = sim.counter_tick_ns(T0 + 2 * S + 40 * MS)
    assert r.power_avg_w == pytest.approx(sim.true_energy_j(uuid, tick - S, tick), rel=1e-9)
    assert r.power_avg_w == pytest.approx(300.0, abs=5.0)
    assert r.power_avg_w != r.power_w  # the average is not the instantaneous value


def test_temperature_rises_with_power_and_cools_toward_ambient():
    sim = make(thermal_tau_s=2.0)
    idle_c = sim.read(T0)[0].temperature_c
    mark(sim, "step_start", T0)
    for t in range(0, 10 * S, 100 * MS):
        hot = sim.read(T0 + t)[0].temperature_c
    assert hot > idle_c + 30
    mark(sim, "step_end", T0 + 10 * S)
    for t in range(10 * S, 30 * S, 100 * MS):
        cool = sim.read(T0 + t)[0].temperature_c
    assert math.isclose(cool, idle_c, abs_tol=0.5)


def test_markers_for_unknown_devices_are_ignored():
    sim = make(noise_w=0.0)
    sim.on_marker(MarkerRec("r", 0, "step_start", 0, 0, T0, "GPU-other"), T0)
    assert [s.power_w for s in sim.read(T0 + S)] == pytest.approx([60.0, 60.0])


def test_default_sim_gpu_is_an_h100_sxm():
    p = SimParams()
    assert p.power_limit_w == 700.0  # the SXM5 part's limit, not the PCIe card's 350 W
    assert 0 < p.idle_w < p.run_w < p.busy_w < p.power_limit_w
    assert p.name.startswith("NVIDIA H100 80GB HBM3")
