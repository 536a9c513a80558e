"""Per-run series under floods: killed runs free their slots, refused runs are counted once."""

from __future__ import annotations

import time

from collector.metrics.state import LiveState

HOUR_NS = 3600 * 10**9


def test_runs_that_never_end_free_their_slots_after_an_hour_of_silence():
    """Jobs killed with SIGKILL never send RUN_END: they held every slot for good, and a
    legitimate new run got no series."""
    live = LiveState(max_run_series=10, run_silent_s=3600)
    for i in range(10):
        live.update_run(f"dead{i}", 0, 1, 0.0, session_start_ns=1)
    live.update_run("busy", 0, 1, 0.0, session_start_ns=1)
    assert "busy" not in live.runs  # full
    later = time.time_ns() + HOUR_NS + 10**9
    assert live.expire_runs(later, 300 * 10**9) == []  # the join keeps them: not returned
    assert live.runs == {}
    live.update_run("busy", 0, 2, 0.0, session_start_ns=1)
    assert "busy" in live.runs
    live.update_run("dead3", 0, 1, 0.0, session_start_ns=1)  # still silent: no series
    assert "dead3" not in live.runs
    live.update_run("dead4", 0, 2, 0.0, session_start_ns=1)  # moves again: series back
    assert "dead4" in live.runs


def test_a_run_that_moves_keeps_its_series():
    live = LiveState(max_run_series=10, run_silent_s=3600)
    live.update_run("r", 0, 1, 0.0, session_start_ns=1)
    live.runs["r"].moved_ns -= HOUR_NS  # last step an hour ago ...
    live.update_run("r", 0, 2, 0.0, session_start_ns=1)  # ... and one now
    live.expire_runs(time.time_ns() + 60 * 10**9, 300 * 10**9)
    assert "r" in live.runs


def test_each_refused_run_is_counted_once_however_many_overflow():
    """Past 10,000 refused runs the bounded map evicted and counted them again every second
    (1.6 M for ~19k runs)."""
    live = LiveState(max_run_series=1)
    live.update_run("shown", 0, 0, 0.0)
    refused = [f"flood-{i}" for i in range(15_000)]
    for _ in range(3):  # the join reports every run's progress once a second
        for run_id in refused:
            live.update_run(run_id, 0, 0, 0.0)
    assert 14_900 <= live.runs_overflow_total <= 15_000  # a hash collision may miss a few
