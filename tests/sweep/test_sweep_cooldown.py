"""The cool-down wait between sweep points (fake clock), and reading temperatures from a daemon."""

from __future__ import annotations

import pytest

from trainer.sweep.cooldown import hot_devices, wait_for_cooldown


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s


def cooling(start_c, per_s, clock):
    return lambda: {"GPU-a": start_c - per_s * clock.now, "GPU-b": 35.0}


def test_hot_devices_ignores_unknown_and_cool_gpus():
    idle = {"GPU-a": 40.0, "GPU-b": 35.0}
    assert hot_devices({"GPU-a": 46.0, "GPU-b": 36.0, "GPU-x": 90.0}, idle, 5.0) == ["GPU-a"]
    assert hot_devices({"GPU-a": 45.0}, idle, 5.0) == []


def test_waits_until_every_gpu_is_near_idle():
    clock = Clock()
    result = wait_for_cooldown(
        cooling(60.0, 1.0, clock),  # 60 C falling 1 C/s; idle 40 + 5 reached at t = 15 s
        {"GPU-a": 40.0, "GPU-b": 35.0},
        delta_c=5.0,
        max_wait_s=100.0,
        poll_s=2.0,
        clock=clock,
        sleep=clock.sleep,
    )
    assert result.reached and result.waited_s == 16.0  # first poll at or after 15 s
    assert result.temperatures_c["GPU-a"] == 44.0
    assert "cool-down: waited 16.0 s, cooled down" in result.describe()


def test_time_cap_ends_the_wait():
    clock = Clock()
    result = wait_for_cooldown(
        cooling(90.0, 0.1, clock),
        {"GPU-a": 40.0},
        delta_c=5.0,
        max_wait_s=7.0,
        poll_s=2.0,
        clock=clock,
        sleep=clock.sleep,
    )
    assert not result.reached and result.waited_s == 7.0
    assert clock.sleeps == [2.0, 2.0, 2.0, 1.0]
    assert "time cap reached, still warm" in result.describe()


def test_already_cool_returns_at_once():
    clock = Clock()
    result = wait_for_cooldown(
        lambda: {"GPU-a": 41.0},
        {"GPU-a": 40.0},
        delta_c=2.0,
        max_wait_s=60.0,
        clock=clock,
        sleep=clock.sleep,
    )
    assert result.reached and result.waited_s == 0.0 and clock.sleeps == []


def test_daemon_thermometer_reads_sim_gpus(sim_daemon):
    from trainer.sweep.cooldown import DaemonThermometer

    with DaemonThermometer(sim_daemon.address) as thermo:
        temps = thermo.gpu_temperatures()
    assert sorted(temps) == sorted(sim_daemon.uuids)
    assert all(10.0 < t < 110.0 for t in temps.values())


def test_unreachable_daemon_is_a_clear_error():
    from trainer.sweep.cooldown import DaemonThermometer
    from trainer.sweep.grid import SweepError

    with (
        DaemonThermometer("127.0.0.1:1", timeout_s=2.0) as thermo,
        pytest.raises(SweepError, match="cannot read temperatures"),
    ):
        thermo.gpu_temperatures()
