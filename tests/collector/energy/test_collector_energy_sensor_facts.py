"""The daemon's measured sensor facts in attribution: instant power's lag behind the counter
(DeviceInfo.instant_power_lag_s) and readings whose power is the driver's 1 s average
(Reading.power_from_avg), from the wire to the energy model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from collector.energy.timeline import DEFAULT_SPEC, CounterSpec, DeviceTimeline, Sample
from collector.join.joiner import Joiner, device_spec
from parawatt_proto import convert
from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.records import DeviceRec, NodeRec
from tests.collector.collector_energy_sim import make_workload, readings, windows


@pytest.fixture(scope="module")
def workload():
    return make_workload(seed=11, epochs=2, steps_per_epoch=30)


def _timeline(samples, spec=DEFAULT_SPEC):
    tl = DeviceTimeline(spec)
    tl.extend(samples)
    return tl


def _errors(tl, truth, intervals):
    err, u = [], []
    for a, b in intervals:
        iv = tl.interval(a, b)
        err.append(abs(iv.energy_j - truth.energy(a, b)) / truth.energy(a, b))
        u.append(abs(iv.energy_j - truth.energy(a, b)) <= iv.uncertainty_j)
    return np.array(err), np.array(u)


def test_instant_power_shifted_by_the_measured_lag(workload):
    """Power 30 ms late misplaces every edge inside a counter window: 50 ms windows are then
    far off and outside their interval; shifted by the measured lag they are as good as with
    power on time."""
    late = readings(workload.truth, seed=2, power_lag_s=0.03)
    on_time = readings(workload.truth, seed=2)
    short = windows(workload, 0.05, 300, seed=3)
    ignored, ignored_cover = _errors(_timeline(late), workload.truth, short)
    shifted, shifted_cover = _errors(
        _timeline(late, CounterSpec(instant_power_lag_s=0.03)), workload.truth, short
    )
    reference, _ = _errors(_timeline(on_time), workload.truth, short)
    assert np.mean(shifted) < 0.3 * np.mean(ignored)
    assert np.mean(shifted) < 1.5 * np.mean(reference)
    assert np.mean(shifted_cover) >= 0.93 > np.mean(ignored_cover)


def test_power_from_average_readings_do_not_shape_a_window(workload):
    """Among instant readings, one flagged power_from_avg is left out of the power curve: the
    result is the same whatever (smoothed) value it carries, and as if it had no power."""
    samples = readings(workload.truth, seed=4, avg_every=3)
    assert any(s.power_from_avg for s in samples) and not all(s.power_from_avg for s in samples)
    absurd = [dataclasses.replace(s, power_w=5000.0) if s.power_from_avg else s for s in samples]
    dropped = [dataclasses.replace(s, power_w=None) if s.power_from_avg else s for s in samples]
    a, b, c = _timeline(samples), _timeline(absurd), _timeline(dropped)
    for start, end in workload.steps[:40]:
        x, y, z = a.interval(start, end), b.interval(start, end), c.interval(start, end)
        assert x.energy_j == pytest.approx(z.energy_j, rel=1e-12)
        assert y.energy_j == pytest.approx(z.energy_j, rel=1e-12)
        assert x.uncertainty_j == pytest.approx(z.uncertainty_j, rel=1e-12)


def test_only_average_readings_make_a_smoothed_power_signal(workload):
    """A device said to have instant power whose every reading is flagged power_from_avg is
    measured as one with 1 s-average power (no lag shift, the wider shape terms)."""
    samples = readings(workload.truth, seed=5, power="avg1s")
    assert all(s.power_from_avg for s in samples)
    flagged = _timeline(samples, CounterSpec(instant_power_lag_s=0.03))
    declared = _timeline(samples, CounterSpec(power_avg_s=1.0))
    for start, end in workload.steps[:40]:
        x, y = flagged.interval(start, end), declared.interval(start, end)
        assert x.energy_j == pytest.approx(y.energy_j, rel=1e-12)
        assert x.uncertainty_j == pytest.approx(y.uncertainty_j, rel=1e-12)


def test_the_wire_carries_the_lag_and_the_flag_into_the_records():
    info = pb.NodeInfo(hostname="n", boot_id="b")
    info.devices.add(index=0, uuid="gpu-0", name="H100", kind=pb.DEVICE_KIND_GPU,
                     has_energy_counter=True, has_instant_power=True,
                     instant_power_lag_s=0.025)  # fmt: skip
    info.devices.add(index=1, uuid="gpu-1", name="H100", kind=pb.DEVICE_KIND_GPU)
    gpu0, gpu1 = convert.node_rec(info).devices
    assert gpu0.instant_power_lag_s == pytest.approx(0.025)
    assert gpu1.instant_power_lag_s is None  # not measured: not zero
    batch = pb.StreamBatch()
    batch.readings.add(seq=1, device=0, time_ns=5, power_w=300.0, power_from_avg=True)
    batch.readings.add(seq=2, device=0, time_ns=6, power_w=310.0)
    flagged, instant = convert.readings(batch, {0: "gpu-0"})
    assert flagged.power_from_avg and not instant.power_from_avg


def _dev(**kw) -> DeviceRec:
    return DeviceRec(index=0, uuid="gpu-0", name="H100", kind="gpu", **kw)


def test_device_spec_takes_the_measured_lag_within_reason():
    assert device_spec(_dev(instant_power_lag_s=0.03)).instant_power_lag_s == 0.03
    assert device_spec(_dev()).instant_power_lag_s == 0.0
    assert device_spec(_dev(instant_power_lag_s=7.0)).instant_power_lag_s == 0.0
    assert device_spec(_dev(power_avg_window_s=0.5)).avg_window_s == 0.5


def test_a_live_daemon_updates_the_sensor_facts_of_a_known_device():
    """After a collector restart devices come from the database first (without the lag);
    the daemon's NodeInfo on connect brings the measured facts and they win."""
    joiner = Joiner()
    joiner.add_node(NodeRec("n", "", devices=(_dev(),)))  # from the database
    dev = joiner._devices["gpu-0"]
    assert dev.spec.instant_power_lag_s == 0.0
    joiner.add_node(NodeRec("n", "boot-1", devices=(_dev(instant_power_lag_s=0.02),)))
    assert joiner._devices["gpu-0"] is dev and dev.spec.instant_power_lag_s == 0.02
    assert dev.timeline.spec.instant_power_lag_s == 0.02
    joiner.add_node(NodeRec("n", "", devices=(_dev(),)))  # a stale copy changes nothing
    assert dev.spec.instant_power_lag_s == 0.02


def test_set_spec_rebuilds_the_curve():
    samples = [Sample(k * 20_000_000, 100.0 + (k % 5) * 50, 10.0 + 0.01 * (k // 5)) for k in
               range(200)]  # fmt: skip
    tl = _timeline(samples)
    before = tl.interval(1_000_000_000, 1_050_000_000).energy_j
    tl.set_spec(CounterSpec(instant_power_lag_s=0.03))
    after = tl.interval(1_000_000_000, 1_050_000_000).energy_j
    assert after != before
    fresh = _timeline(samples, CounterSpec(instant_power_lag_s=0.03))
    assert after == fresh.interval(1_000_000_000, 1_050_000_000).energy_j
