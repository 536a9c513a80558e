"""Additivity, out-of-order and duplicate input, streaming extend() and trim()."""

import random

import numpy as np
import pytest

from collector.energy.timeline import (
    DEFAULT_SPEC,
    PHASE_HISTORY_NS,
    CounterSpec,
    DeviceTimeline,
)
from tests.collector.collector_energy_sim import make_workload, readings, to_ns, to_s


@pytest.fixture(scope="module")
def workload():
    return make_workload(seed=31, epochs=2, steps_per_epoch=20)


@pytest.fixture(scope="module")
def samples(workload):
    return readings(workload.truth, seed=32)


def _timeline(samples, spec=DEFAULT_SPEC):
    tl = DeviceTimeline(spec, max_gap_ns=100_000_000)
    tl.extend(samples)
    return tl


def _fields(iv):
    return (iv.energy_j, iv.power_integral_j, iv.uncertainty_j, iv.avg_power_w,
            iv.max_power_w, iv.coverage, iv.flags, iv.source)  # fmt: skip


def _same(iv, ref):
    """Equal up to float rounding (a different history start shifts cumulative sums)."""
    *numbers, flags, source = _fields(iv)
    *ref_numbers, ref_flags, ref_source = _fields(ref)
    assert (flags, source) == (ref_flags, ref_source)
    assert numbers == pytest.approx(ref_numbers, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("spec", [CounterSpec(), CounterSpec(update_s=0.5, update_jitter_s=0.01)])
def test_epoch_is_the_sum_of_its_steps_and_gaps(workload, samples, spec):
    tl = _timeline(samples, spec)
    epoch_start, epoch_end = workload.epochs[0]
    steps = [s for s in workload.steps if epoch_start <= s[0] < epoch_end]
    # carve the epoch into steps with a little slack between them (data loading)
    bounds = [epoch_start]
    for a, b in steps:
        bounds += [a + 1_234_567, b - 2_345_678] if a != epoch_start else [b - 2_345_678]
    bounds.append(epoch_end)
    parts = [tl.interval(a, b).energy_j for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    epoch = tl.interval(epoch_start, epoch_end).energy_j
    assert sum(parts) == pytest.approx(epoch, rel=1e-12, abs=1e-9)


def test_random_splits_add_up(samples):
    tl = _timeline(samples)
    rng = random.Random(5)
    lo, hi = samples[0].time_ns, samples[-1].time_ns
    for _ in range(20):
        cuts = sorted(rng.randrange(lo, hi) for _ in range(rng.randrange(2, 40)))
        whole = tl.interval(cuts[0], cuts[-1]).energy_j
        parts = [tl.interval(a, b).energy_j for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        assert all(p >= 0 for p in parts)
        assert sum(parts) == pytest.approx(whole, rel=1e-12, abs=1e-9)


def test_out_of_order_and_duplicates_give_the_same_answer(workload, samples):
    reference = _timeline(samples)
    shuffled = samples + random.Random(1).sample(samples, len(samples) // 5)  # replays
    random.Random(2).shuffle(shuffled)
    tl = DeviceTimeline(max_gap_ns=100_000_000)
    for i in range(0, len(shuffled), 97):  # arrives in arbitrary chunks
        tl.extend(shuffled[i : i + 97])
    assert len(tl) == len(samples)
    for a, b in workload.steps[::3] + workload.epochs:
        assert _fields(tl.interval(a, b)) == _fields(reference.interval(a, b))


@pytest.mark.parametrize("coverage", [1.0, 0.25])
def test_streaming_matches_batch_once_settled(workload, samples, coverage):
    """A part-time sensor's last window waits for the next one's level (its lag correction,
    model._part_time_lag): settled stays one update further back, and what is settled is
    still final."""
    spec = CounterSpec(coverage_fraction=coverage)
    if coverage < 1.0:
        samples = readings(workload.truth, seed=32, coverage=coverage)
    reference = _timeline(samples, spec)
    tl = DeviceTimeline(spec, max_gap_ns=100_000_000)
    done = {}
    pending = list(workload.steps)
    for i in range(0, len(samples), 25):  # 0.5 s batches, as a daemon stream delivers them
        tl.extend(samples[i : i + 25])
        settled = tl.settled_until_ns()
        assert settled <= tl.covered_until_ns()
        while pending and pending[0][1] <= settled:
            a, b = pending.pop(0)
            done[(a, b)] = tl.interval(a, b)
    assert len(done) >= len(workload.steps) - 1
    for (a, b), iv in done.items():
        _same(iv, reference.interval(a, b))


@pytest.mark.parametrize("spec", [DEFAULT_SPEC, CounterSpec(pin_update_phase=False)])
def test_trim_keeps_later_intervals_and_the_energy_scale(spec):
    """trim() keeps what later intervals need (with the update phase pinned, the default: the
    readings whose brackets pin it, PHASE_HISTORY_NS before the cut), so they come out the
    same."""
    workload = make_workload(seed=31, epochs=5, steps_per_epoch=20)
    samples = readings(workload.truth, seed=32)
    tl = _timeline(samples, spec)
    reference = _timeline(samples, spec)
    cut = workload.epochs[-1][0]
    before = {t: tl.energy_at(t) for t in (cut, cut + 10**9, samples[-1].time_ns)}
    tl.trim(cut)
    kept = [s for s in samples if s.time_ns >= cut - PHASE_HISTORY_NS - 250_000_000]
    assert len(tl) <= len(kept) < len(samples) * 0.7
    later = [s for s in workload.steps if s[0] >= cut] + [workload.epochs[-1]]
    for a, b in later:
        _same(tl.interval(a, b), reference.interval(a, b))
    for t, e in before.items():
        assert tl.energy_at(t) == pytest.approx(e, abs=1e-6)
    early = tl.interval(workload.epochs[0][0], cut)
    assert "incomplete" in early.flags
    tl.trim(cut - 10**9)  # going back is a no-op
    tl.trim(samples[-1].time_ns + 10**9)  # trimming everything keeps the last readings
    assert tl.covered_until_ns() == samples[-1].time_ns


def test_trim_across_a_reset_keeps_energy_at_continuous(samples):
    reload_ns = samples[len(samples) // 3].time_ns
    reset = [
        s if s.time_ns < reload_ns else type(s)(s.time_ns, s.power_w, s.energy_j - 9e4)
        for s in samples
    ]
    tl = _timeline(reset)
    t = samples[len(samples) // 2].time_ns
    e = tl.energy_at(t)
    tl.trim(samples[len(samples) // 2 - 50].time_ns)
    assert tl.energy_at(t) == pytest.approx(e, abs=1e-6)


def test_nanosecond_bounds_survive_large_timestamps(samples):
    tl = _timeline(samples)
    a = samples[200].time_ns + 7
    iv = tl.interval(a, a + 1)
    assert iv.start_ns == a and iv.end_ns == a + 1
    assert 0 < iv.energy_j < 1e-6  # 1 ns of a few hundred W
    assert to_ns(to_s(a)) == a
    assert np.isfinite(iv.uncertainty_j)


def test_unsettled_tail_is_extrapolated_within_its_uncertainty(workload, samples):
    """Beyond the last counter update the curve follows power, scaled by the counter."""
    truth = workload.truth
    for end in range(300, len(samples), 97):
        tl = _timeline(samples[:end])
        settled, covered = tl.settled_until_ns(), tl.covered_until_ns()
        assert covered - 150_000_000 < settled <= covered
        a = settled - 500_000_000
        iv = tl.interval(a, covered)
        assert abs(iv.energy_j - truth.energy(a, covered)) <= iv.uncertainty_j


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"period_s": 0.0217}, {"power": None}, {"update_s": 0.05}, {"coverage": 0.25}],
)
def test_the_quick_settled_answer_is_never_later_than_the_models(workload, kwargs):
    """settled_until_ns() answers from the counter's last change without a model rebuild (the
    join asks it at every poll): it must never be later than the model's answer (a figure would
    be final before it is) and at most one reading spacing earlier."""
    samples = readings(workload.truth, seed=33, **kwargs)
    spec = CounterSpec(coverage_fraction=kwargs.get("coverage", 1.0))
    tl = DeviceTimeline(spec, max_gap_ns=100_000_000)
    quick_used = 0
    for i in range(0, len(samples), 7):
        tl.extend(samples[i : i + 7])
        quick = tl._settled_quick()
        tl._model = None
        model = tl._ensure()
        exact = tl._origin_ns + round(model.settled * 1e9) if model.counter else None
        if quick is None or exact is None:
            continue
        quick_used += 1
        spacing = max(np.diff(tl._t[-66:]))
        assert exact - spacing <= quick <= exact
    assert quick_used > len(samples) // 7 // 2
