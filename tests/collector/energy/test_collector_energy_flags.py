"""Gaps, counter resets, coverage, disagreement and counter-less devices: flagged, not hidden."""

import dataclasses

import numpy as np
import pytest

from collector.energy.timeline import (
    FLAGS,
    DeviceTimeline,
    Sample,
    attribute,
    idle_power_w,
    integrate_power,
)
from tests.collector.collector_energy_sim import make_workload, readings, to_ns, to_s


@pytest.fixture(scope="module")
def workload():
    return make_workload(seed=21, epochs=2, steps_per_epoch=25)


@pytest.fixture(scope="module")
def samples(workload):
    return readings(workload.truth, seed=22)


def _timeline(samples, **kwargs):
    tl = DeviceTimeline(**kwargs)
    tl.extend(samples)
    return tl


def test_gap_is_flagged_and_bridged_by_the_counter(workload, samples):
    a, b = workload.epochs[0]
    hole = (to_ns(to_s(a) + 2.0), to_ns(to_s(a) + 3.0))  # the daemon lost one second
    kept = [s for s in samples if not hole[0] <= s.time_ns < hole[1]]
    tl = _timeline(kept)
    iv = tl.interval(a, b)
    true_j = workload.truth.energy(a, b)
    assert "gap" in iv.flags and iv.source == "counter"
    assert abs(iv.energy_j - true_j) < 0.005 * true_j  # the counter still knows the total
    assert iv.coverage == pytest.approx(1.0 - 1.0 / ((b - a) / 1e9), abs=0.01)
    assert abs(iv.energy_j - true_j) <= iv.uncertainty_j
    clear = tl.interval(to_ns(to_s(a) + 3.5), to_ns(to_s(a) + 4.5))
    assert "gap" not in clear.flags and clear.coverage == pytest.approx(1.0)
    inside = tl.interval(to_ns(to_s(a) + 2.3), to_ns(to_s(a) + 2.6))
    assert "gap" in inside.flags and inside.coverage == 0.0
    assert inside.uncertainty_j > 0.2 * inside.energy_j  # no shape known inside a gap


def test_explicit_max_gap(samples):
    spacing = 20_000_000  # readings every ~20 ms, jittered up to 4 ms
    a, b = samples[100].time_ns, samples[300].time_ns
    assert "gap" not in _timeline(samples, max_gap_ns=5 * spacing).interval(a, b).flags
    assert "gap" in _timeline(samples, max_gap_ns=spacing).interval(a, b).flags


def test_counter_reset_is_flagged_positive_and_sensible(workload):
    a, b = workload.epochs[1]
    reload_s = to_s(a) + 4.03  # driver reload: the counter restarts from zero
    reload_ns = to_ns(reload_s)
    reset = readings(workload.truth, seed=22, reload_s=reload_s)
    tl = _timeline(reset)
    iv = tl.interval(a, b)
    true_j = workload.truth.energy(a, b)
    assert "counter_reset" in iv.flags
    assert iv.energy_j > 0
    assert abs(iv.energy_j - true_j) < 0.01 * true_j
    around = tl.interval(reload_ns - 300_000_000, reload_ns + 300_000_000)
    assert "counter_reset" in around.flags and around.energy_j > 0
    before = tl.interval(a, reload_ns - 500_000_000)
    after = tl.interval(reload_ns + 500_000_000, b)
    for part in (before, after):
        assert "counter_reset" not in part.flags
        true_part = workload.truth.energy(part.start_ns, part.end_ns)
        assert abs(part.energy_j - true_part) < 0.005 * true_part
    e_before = [tl.energy_at(s.time_ns) for s in reset[::10]]
    assert all(np.diff(e_before) >= 0)  # one increasing curve across the reset


def test_incomplete_intervals_are_not_extrapolated(workload, samples):
    tl = _timeline(samples[50:150])
    first, last = samples[50].time_ns, samples[149].time_ns
    whole = tl.interval(first, last)
    early = tl.interval(first - (last - first), last)  # half of it before the first reading
    assert "incomplete" in early.flags and "incomplete" not in whole.flags
    assert early.coverage == pytest.approx(0.5)
    assert early.energy_j == pytest.approx(whole.energy_j)  # the covered part only
    late = tl.interval(first, last + (last - first))
    assert "incomplete" in late.flags and late.energy_j == pytest.approx(whole.energy_j)
    outside = tl.interval(last + 10, last + 10**9)
    assert outside.energy_j is None and outside.coverage == 0.0 and outside.source == "none"
    assert "incomplete" in outside.flags
    empty = DeviceTimeline().interval(first, last)
    assert empty.energy_j is None and empty.coverage == 0.0 and "incomplete" in empty.flags


def test_no_counter_device_integrates_power(workload):
    samples = readings(workload.truth, seed=23, counter=False)
    for a, b in workload.epochs:
        iv = attribute(samples, a, b)
        true_j = workload.truth.energy(a, b)
        assert iv.source == "power" and iv.flags == frozenset({"no_counter"})
        assert iv.energy_j == iv.power_integral_j
        assert abs(iv.energy_j - true_j) < 0.005 * true_j
        assert abs(iv.energy_j - true_j) <= iv.uncertainty_j
    tl = _timeline(samples)
    within = [
        abs(tl.interval(a, b).energy_j - workload.truth.energy(a, b))
        <= tl.interval(a, b).uncertainty_j
        for a, b in workload.steps
    ]
    assert np.mean(within) >= 0.95


def test_disagreement_between_counter_and_power(workload, samples):
    a, b = workload.epochs[0]
    assert "disagree" not in attribute(samples, a, b).flags
    skewed = [dataclasses.replace(s, power_w=s.power_w * 1.3) for s in samples]
    iv = attribute(skewed, a, b)
    assert "disagree" in iv.flags
    assert iv.source == "counter"
    assert abs(iv.energy_j - workload.truth.energy(a, b)) < 0.005 * iv.energy_j
    assert iv.power_integral_j == pytest.approx(1.3 * attribute(samples, a, b).power_integral_j)


def test_no_false_disagreement_on_steps(workload, samples):
    tl = _timeline(samples)
    flagged = [s for s in workload.steps if "disagree" in tl.interval(*s).flags]
    assert not flagged


def test_flags_are_from_the_documented_set(workload, samples):
    tl = _timeline(samples[::3])
    for a, b in workload.steps[:20]:
        assert tl.interval(a, b).flags <= FLAGS


def test_integrate_power_interpolates_at_bounds():
    t0 = 5 * 10**17
    ramp = [Sample(t0 + k * 10**8, 100.0 + 10.0 * k, None) for k in range(11)]  # 100 W/s
    # power(t) = 100 + 100 t on [0, 1] s; exact integral over [0.123, 0.877]
    a_s, b_s = 0.123, 0.877
    exact = 100 * (b_s - a_s) + 50 * (b_s**2 - a_s**2)
    got = integrate_power(ramp[::-1], t0 + round(a_s * 1e9), t0 + round(b_s * 1e9))
    assert got == pytest.approx(exact, rel=1e-12)
    assert integrate_power(ramp, t0 - 1, t0 + 10**8) is None
    assert integrate_power([], t0, t0 + 1) is None
    iv = attribute(ramp, t0 + round(a_s * 1e9), t0 + round(b_s * 1e9))
    assert iv.energy_j == pytest.approx(exact, rel=1e-12) and iv.source == "power"
    assert iv.max_power_w == pytest.approx(100 + 100 * b_s)


def test_idle_power_is_robust_to_spikes():
    rng = np.random.default_rng(0)
    idle = [Sample(k * 20_000_000, float(60 + rng.normal(0, 1)), None) for k in range(500)]
    spiky = [
        dataclasses.replace(s, power_w=300.0) if k % 25 == 0 else s for k, s in enumerate(idle)
    ]
    assert idle_power_w(spiky) == pytest.approx(60.0, abs=0.5)
    counter_only = [Sample(k * 10**9, None, 1000.0 + 55.0 * k) for k in range(10)]
    assert idle_power_w(counter_only) == pytest.approx(55.0)
    assert idle_power_w([]) is None


def test_end_before_start_is_an_error(samples):
    with pytest.raises(ValueError):
        _timeline(samples[:10]).interval(samples[5].time_ns, samples[4].time_ns)
