"""Reading holes: `gap` is 5x each device's own median spacing (not a fixed second), and the
daemon's sampler thread can run at a raised priority."""

from __future__ import annotations

import os
import threading

import pytest

from collector.join.joiner import Joiner
from collector.join.state import JoinConfig
from power_daemon.sampler import Sampler
from tests.collector.join.test_collector_join import busy_device, by_key, feed
from tests.collector.synth import MS, T0, S, node, run_markers

CFG = JoinConfig(late_bound_ns=2 * S, chunk_ns=2 * S, keep_ns=10 * S, idle_guard_ns=S,
                 idle_min_s=1.0, idle_bucket_ns=S)  # fmt: skip


def _run(period_ns: int, hole: tuple[int, int] | None):
    start = T0 + 3 * S
    ms, spans, end = run_markers(start, steps=8, step_ns=400 * MS, gap_ns=50 * MS,
                                 device_uuid="gpu-0")  # fmt: skip
    dev = busy_device("gpu-0", spans, run=(start, end))
    readings = dev.readings(T0, end + 5 * S, period_ns=period_ns)
    if hole:
        readings = [r for r in readings if not hole[0] <= r.time_ns < hole[1]]
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    return by_key(feed(j, "n1", readings, ms)), spans


def test_a_348_ms_hole_at_20_ms_sampling_is_a_gap():
    clean, spans = _run(20 * MS, None)
    assert not any("gap" in i.flags for i in clean.values())
    a = spans[3][0] + 20 * MS
    holed, _ = _run(20 * MS, (a, a + 348 * MS))  # 17 readings lost: 5x median is 100 ms
    step = holed[("r1", 0, "step", 0, 3, "gpu-0")]
    assert "gap" in step.flags and step.coverage < 0.3
    assert not any("gap" in i.flags for k, i in holed.items() if k[2] == "step" and k[4] != 3)
    epoch = holed[("r1", 0, "epoch", 0, 0, "gpu-0")]
    assert "gap" in epoch.flags


def test_slow_sampling_is_not_a_gap_of_its_own():
    """A device read every 500 ms (a CPU package, say) has no gaps at 1.2 s spacing."""
    slow, _ = _run(500 * MS, None)
    assert not any("gap" in i.flags for i in slow.values())


def test_sampler_thread_priority_is_applied():
    niceness = []
    done = threading.Event()

    def tick():
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        done.set()

    base = os.getpriority(os.PRIO_PROCESS, 0)
    sampler = Sampler(10 * MS, tick, nice=min(base + 3, 19))  # lowering is always allowed
    sampler.start()
    assert done.wait(10)
    sampler.close()
    assert niceness[0] == min(base + 3, 19)
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the process (main thread) unchanged


def test_sampler_without_permission_keeps_sampling(caplog):
    if os.geteuid() == 0:
        pytest.skip("root may raise priority")
    done = threading.Event()
    sampler = Sampler(10 * MS, done.set, nice=-10)
    with caplog.at_level("INFO"):
        sampler.start()
        assert done.wait(10)
        sampler.close()
    assert "CAP_SYS_NICE" in caplog.text


def test_sampler_realtime_policy_or_a_clear_fallback(caplog):
    """SCHED_FIFO where allowed (root, CAP_SYS_NICE); else it says so and keeps sampling."""
    policies = []
    done = threading.Event()

    def tick():
        policies.append(os.sched_getscheduler(threading.get_native_id()))
        done.set()

    sampler = Sampler(10 * MS, tick, realtime=True)
    with caplog.at_level("INFO"):
        sampler.start()
        assert done.wait(10)
        sampler.close()
    if sampler.policy == "fifo":
        assert policies[0] == os.SCHED_FIFO
        assert os.sched_getscheduler(0) != os.SCHED_FIFO  # the process (main thread) unchanged
    else:
        assert policies[0] != os.SCHED_FIFO and "CAP_SYS_NICE" in caplog.text
