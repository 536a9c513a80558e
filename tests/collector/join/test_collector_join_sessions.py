"""A run resumed from a checkpoint under the same run id: the same marker identities again,
later. Every session is joined, re-sends are still ignored, idle power stays idle."""

from __future__ import annotations

import pytest

from collector.join.joiner import Joiner
from tests.collector.join.test_collector_join import CFG
from tests.collector.synth import MS, T0, S, SynthDevice, marker, node

STEP, GAP, SPE = 300 * MS, 50 * MS, 4  # step length, gap between markers, steps per epoch


def session(t, epochs, stop_after=None, status="completed"):
    """RUN_START, each epoch's EPOCH_START, steps and EPOCH_END, RUN_END. stop_after=k: the
    last epoch is interrupted after k steps (no EPOCH_END, RUN_END 'interrupted'); None as
    status: no RUN_END at all (the process was killed)."""
    ms, spans, start = [marker("run_start", t)], [], t
    t += GAP
    for e in epochs:
        ms.append(marker("epoch_start", t, epoch=e))
        t += GAP
        for k in range(SPE):
            if stop_after is not None and e == epochs[-1] and k == stop_after:
                break
            ms += [marker("step_start", t, epoch=e, step=e * SPE + k),
                   marker("step_end", t + STEP, epoch=e, step=e * SPE + k)]  # fmt: skip
            spans.append((t, t + STEP))
            t += STEP + GAP
        else:
            ms.append(marker("epoch_end", t, epoch=e))
            t += GAP
    if status is not None:
        ms.append(marker("run_end", t, status=status))
    return ms, spans, (start, t)


def device(sessions, idle_w=50.0, run_w=90.0, busy_w=300.0) -> SynthDevice:
    levels = []  # (time, order at that time, power): a run's end comes after a step's
    for spans, (start, end) in sessions:
        levels += [(start, 0, run_w), (end, 3, idle_w)]
        for a, b in spans:
            levels += [(a, 1, busy_w), (b, 2, run_w)]
    return SynthDevice("gpu-0", idle_w=idle_w, levels=[(t, w) for t, _, w in sorted(levels)])


def feed(joiner, readings, markers, every=25):
    """Like the stream: readings in chunks, each marker once readings reach its time."""
    markers = sorted(markers, key=lambda m: m.time_ns)
    outs, mi = [], 0
    for i in range(0, len(readings), every):
        chunk = readings[i : i + every]
        joiner.add_readings("n1", chunk)
        due = [m for m in markers[mi:] if m.time_ns <= chunk[-1].time_ns]
        joiner.add_markers("n1", due)
        mi += len(due)
        outs.append(joiner.poll())
    return outs


def resumed(pause_ns):
    """Session 1: epoch 0, then 2 steps of epoch 1 and interrupted; session 2 (pause_ns later)
    resumes from the epoch-0 checkpoint: epoch 1 again, all of it."""
    ms1, spans1, (s1, e1) = session(T0 + 12 * S, [0, 1], stop_after=2, status="interrupted")
    ms2, spans2, (s2, e2) = session(e1 + pause_ns, [1])
    dev = device([(spans1, (s1, e1)), (spans2, (s2, e2))])
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    outs = feed(j, dev.readings(T0, e2 + 5 * S), ms1 + ms2)
    return j, dev, outs, (s1, e1), (s2, e2)


@pytest.mark.parametrize("pause_ns", [3 * S, 100 * MS])  # 100 ms: session 1 not yet computed
def test_every_session_of_a_resumed_run_is_joined(pause_ns):
    j, dev, outs, (s1, e1), (s2, e2) = resumed(pause_ns)
    got = [i for o in outs for i in o.intervals]
    runs = sorted((i for i in got if i.kind == "run"), key=lambda i: i.start_ns)
    assert [(r.start_ns, r.end_ns) for r in runs] == [(s1, e1), (s2, e2)]
    for r in runs:
        assert r.energy_j == pytest.approx(dev.true_energy(r.start_ns, r.end_ns), rel=1e-3)
        assert r.active_energy_j == pytest.approx(r.energy_j - 50.0 * r.duration_s, rel=1e-6)
    steps = sorted((i.step, i.start_ns) for i in got if i.kind == "step")
    assert [s for s, _ in steps] == [0, 1, 2, 3, 4, 4, 5, 5, 6, 7]  # 4, 5 ran in both sessions
    assert all(t >= s2 for s, t in steps if s >= 6)
    epochs = [(i.epoch, i.start_ns >= s2) for i in got if i.kind == "epoch"]
    assert sorted(epochs) == [(0, False), (1, True)]  # session 1's epoch 1 never ended
    assert sum(o.dropped_markers for o in outs) == 1  # that epoch's start
    facts = [u for o in outs for u in o.rank_updates]
    assert [u.start_ns for u in facts] == [s1, s2]
    assert all(u.idle_power_w == pytest.approx(50.0) for u in facts)
    assert not j.pending_keys()


def test_resent_markers_of_either_session_change_nothing():
    j, dev, outs, *_ = resumed(3 * S)
    ms1, _, _ = session(T0 + 12 * S, [0, 1], stop_after=2, status="interrupted")
    j.add_markers("n1", ms1)  # a replay, e.g. after a daemon reconnect
    more = dev.readings(dev.levels[-1][0] + 5 * S, dev.levels[-1][0] + 8 * S, seq0=10**6)
    again = feed(j, more, [])
    assert not [i for o in again for i in o.intervals] and not j.pending_keys()


def test_a_session_killed_without_run_end_is_dropped_and_flagged():
    ms1, spans1, (s1, e1) = session(T0 + 12 * S, [0], stop_after=3, status=None)
    ms2, spans2, (s2, e2) = session(e1 + 2 * S, [0])
    dev = device([(spans1, (s1, e1)), (spans2, (s2, e2))])
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    outs = feed(j, dev.readings(T0, e2 + 5 * S), ms1 + ms2)
    (run,) = [i for o in outs for i in o.intervals if i.kind == "run"]
    assert (run.start_ns, run.end_ns) == (s2, e2) and "restarted" in run.flags
    assert run.energy_j == pytest.approx(dev.true_energy(s2, e2), rel=1e-3)
    assert sum(o.dropped_markers for o in outs) >= 1
    assert not j.pending_keys()


def test_idle_power_is_not_measured_inside_a_resumed_session():
    """The device's busy spans know sessions: a second RUN_START of the same rank must not
    leave its device looking idle (regression: one span per rank, reopened backwards)."""
    ms1, spans1, (s1, e1) = session(T0 + 12 * S, [0])
    long_run = [(e1 + 3 * S, e1 + 3 * S + 25 * S)]  # session 2: 25 s at 300 W, no markers
    ms2 = [marker("run_start", long_run[0][0]), marker("run_end", long_run[0][1])]
    dev = device([(spans1, (s1, e1)), (long_run, long_run[0])])
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    outs = feed(j, dev.readings(T0, long_run[0][1] + 15 * S), ms1 + ms2)
    idle = [u.idle_power_w for o in outs for u in o.idle_updates if u.idle_power_w is not None]
    assert idle and all(w == pytest.approx(50.0) for w in idle)
    assert len([i for o in outs for i in o.intervals if i.kind == "run"]) == 2
