"""A daemon's DeviceInfo sensor facts are measured, so they can be wrong (a failing sensor, a
calibration gone wrong) or hostile: out of range, they decode as not measured and the collector
falls back to its defaults, and the energy model still measures the device."""

from __future__ import annotations

import math

import pytest

from collector.energy.timeline import DeviceTimeline
from collector.join.joiner import device_spec
from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.convert import device_rec
from tests.collector.collector_energy_sim import make_workload, readings

FACTS = ("power_limit_w", "memory_total_bytes", "energy_counter_update_s",
         "energy_counter_resolution_j", "power_avg_window_s", "instant_power_lag_s")  # fmt: skip


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1.0, 1e300])
def test_out_of_range_facts_decode_as_not_measured(bad):
    info = pb.DeviceInfo(index=0, uuid="GPU-x", name="H100", kind=pb.DEVICE_KIND_GPU,
                         has_energy_counter=True, has_instant_power=True,
                         **{name: bad for name in FACTS})  # fmt: skip
    rec = device_rec(info)
    assert rec.power_limit_w is None and rec.memory_total_bytes is None
    assert rec.counter_update_s is None and rec.counter_resolution_j is None
    assert rec.power_avg_window_s is None and rec.instant_power_lag_s is None
    spec = device_spec(rec)
    assert (spec.update_s, spec.resolution_j, spec.power_avg_s) == (0.1, 0.001, 0.0)
    workload = make_workload(seed=1, epochs=1, steps_per_epoch=5)
    tl = DeviceTimeline(spec)
    tl.extend(readings(workload.truth, seed=2))
    a, b = workload.epochs[0]
    iv = tl.interval(a, b)
    assert abs(iv.energy_j - workload.truth.energy(a, b)) <= iv.uncertainty_j
    assert math.isfinite(iv.uncertainty_j) and iv.uncertainty_j > 0


def test_measured_facts_in_range_are_kept():
    info = pb.DeviceInfo(index=0, uuid="GPU-x", name="H100", kind=pb.DEVICE_KIND_GPU,
                         power_limit_w=700.0, memory_total_bytes=80e9,
                         energy_counter_update_s=0.05, energy_counter_resolution_j=0.001,
                         power_avg_window_s=0.0, instant_power_lag_s=0.03)  # fmt: skip
    rec = device_rec(info)
    assert (rec.power_limit_w, rec.counter_update_s, rec.power_avg_window_s) == (700.0, 0.05, 0.0)
    assert rec.instant_power_lag_s == 0.03 and rec.memory_total_bytes == 80e9
