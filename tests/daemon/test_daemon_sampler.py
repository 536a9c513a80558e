"""Drift-free sampler schedule and its resilience to failing ticks."""

import threading

import pytest

from power_daemon.sampler import Sampler, next_deadline


@pytest.mark.parametrize(
    ("prev", "now", "expected"),
    [
        (1000, 1005, 1020),  # on time: the next grid point
        (1000, 1019, 1020),
        (1000, 1020, 1020),  # due right now: tick at once
        (1000, 1040, 1040),
        (1000, 1075, 1080),  # overran three periods: skip the missed ones, do not burst
    ],
)
def test_next_deadline_stays_on_the_absolute_grid(prev, now, expected):
    assert next_deadline(prev, 20, now) == expected
    assert (expected - prev) % 20 == 0


def test_sampler_survives_failing_ticks_and_stops_on_close():
    calls, reached = [], threading.Event()

    def tick():
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("backend hiccup")
        if len(calls) >= 5:
            reached.set()

    sampler = Sampler(1_000_000, tick)
    sampler.start()
    assert reached.wait(10)
    sampler.close()
    n = len(calls)
    assert sampler.failed_ticks == 2
    assert not sampler._thread.is_alive() and len(calls) == n
