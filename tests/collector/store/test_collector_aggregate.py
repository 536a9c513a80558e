"""Per-second aggregation of raw readings (pure)."""

from __future__ import annotations

import pytest

from collector.store.aggregate import SecondAggregator
from parawatt_proto.records import ReadingRec
from tests.collector.synth import MS, T0, S


def r(t: int, uuid: str = "g0", p: float = 100.0, e: float | None = None, lost=False):
    return ReadingRec(0, uuid, t, lost, p, None, e, gpu_util_pct=50.0, temperature_c=p / 2)


def test_only_complete_seconds_are_emitted_with_their_statistics():
    agg = SecondAggregator()
    first = [r(T0 + k * 100 * MS, p=100.0 + k, e=float(k)) for k in range(10)]
    assert agg.add(first) == []  # the second is not known to be over yet
    (a,) = agg.add([r(T0 + S)])
    assert (a.device_uuid, a.second, a.samples) == ("g0", T0 // S, 10)
    assert a.avg_power_w == pytest.approx(104.5) and a.max_power_w == 109.0
    assert (a.energy_first_j, a.energy_last_j) == (0.0, 9.0)
    assert a.avg_gpu_util_pct == 50.0 and a.max_temperature_c == pytest.approx(54.5)
    assert agg.open_seconds() == {"g0": T0 // S + 1}


def test_devices_are_independent_and_lost_readings_skipped():
    agg = SecondAggregator()
    out = agg.add([r(T0, "a"), r(T0, "b", lost=True), r(T0 + 10 * MS, "b"), r(T0 + S, "a")])
    assert [(a.device_uuid, a.samples) for a in out] == [("a", 1)]


def test_seconds_already_stored_are_not_emitted_again():
    """After a restart the stored raw readings of the unfinished second are fed again."""
    agg = SecondAggregator(done_until={"g0": T0 // S})
    out = agg.add([r(T0 + 500 * MS), r(T0 + S), r(T0 + S + 500 * MS), r(T0 + 2 * S)])
    assert [(a.second, a.samples) for a in out] == [(T0 // S + 1, 2)]
