"""The join when a node's clock steps back (an NTP step; a VM resumed) and when one device's
readings come late, out of their stream's order: no interval may come out wrong without a
flag, and what is not ambiguous stays exact."""

from __future__ import annotations

import dataclasses

import pytest

from collector.config import CollectorConfig
from collector.join.joiner import Joiner
from collector.metrics.state import LiveState
from collector.pipeline import Pipeline
from collector.rebuild import restore_nodes
from collector.records import StreamChunk
from collector.store import reads as store_reads
from collector.store.aggregate import SecondAggregator
from collector.store.db import create_db_engine, migrate
from collector.store.store import Store
from collector.store.writebatch import WriteBatch
from parawatt_proto.records import MarkerRec
from tests.collector.join.test_collector_join import CFG, busy_device
from tests.collector.synth import MS, T0, S, SynthDevice, marker, node, run_markers

STEP_AT = T0 + 30 * S  # real time of the step


def stepped_device(step_s: float):
    """A 40-step run's markers, its GPU, the GPU's readings (real times) and the stamp a node
    clock stepping by step_s at STEP_AT gives a real time."""
    start = T0 + 15 * S
    ms, spans, end = run_markers(start, steps=40, step_ns=300 * MS, gap_ns=50 * MS, epochs=2,
                                 device_uuid="gpu-0")  # fmt: skip
    dev = busy_device("gpu-0", spans, run=(start, end))
    d = int(step_s * S)

    def stamp(t: int) -> int:
        return t + (d if t >= STEP_AT else 0)

    return ms, dev, dev.readings(T0, end + 20 * S), stamp


def stepped_run(step_s: float, every: int = 25):
    """A 40-step run whose node's clock steps by step_s at STEP_AT: readings and markers are
    stamped by the stepped clock and delivered in real order. Returns the intervals and, per
    key, the true energy and the real times of its two markers."""
    ms, dev, readings, stamp = stepped_device(step_s)

    real = {(m.key, m.kind.endswith("_end")): m.time_ns for m in ms}
    pairs = sorted(((m, dataclasses.replace(m, time_ns=stamp(m.time_ns))) for m in ms),
                   key=lambda p: p[0].time_ns)  # fmt: skip
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    out, mi, steps = [], 0, 0
    for i in range(0, len(readings), every):
        chunk = readings[i : i + every]
        j.add_readings("n1", [dataclasses.replace(r, time_ns=stamp(r.time_ns)) for r in chunk])
        due = [m2 for m, m2 in pairs[mi:] if m.time_ns <= chunk[-1].time_ns]
        mi += len(due)
        j.add_markers("n1", due)
        res = j.poll()
        out += res.intervals
        steps += res.clock_steps
    j.add_markers("n1", [m2 for _, m2 in pairs[mi:]])
    out += j.poll().intervals
    assert steps == 1  # counted once for the node (parawatt_join_clock_steps_total)
    truth, spans = {}, {}
    for i in out:
        k = (i.run_id, i.rank, i.kind, i.epoch, i.step)
        spans[k] = (real[(k, False)], real[(k, True)])
        truth[k] = dev.true_energy(*spans[k])
    return out, truth, spans


def _key(i):
    return (i.run_id, i.rank, i.kind, i.epoch, i.step)


def feed_in_stream_order(j: Joiner, stream, ms):
    """Readings as the stream sends them (not in time order); each marker once the stream
    has a reading past it. Returns the intervals and the readings set aside as late."""
    out, late, mi = [], 0, 0
    ms = sorted(ms, key=lambda m: m.time_ns)
    for i in range(0, len(stream), 25):
        chunk = stream[i : i + 25]
        j.add_readings("n1", chunk)
        due = [m for m in ms[mi:] if m.time_ns <= max(r.time_ns for r in chunk)]
        mi += len(due)
        j.add_markers("n1", due)
        res = j.poll()
        out += res.intervals
        late += res.readings_late
    return out, late


@pytest.mark.parametrize("step_s", [-15.0, -3.0, -0.5])
def test_clock_stepping_back_leaves_no_interval_wrong_without_a_flag(step_s):
    out, truth, _ = stepped_run(step_s)
    assert len(out) == 83  # 80 steps, 2 epochs, the run: none lost
    unflagged_wrong = []
    for i in out:
        t = truth[_key(i)]
        if i.energy_j is None:
            assert i.flags & {"clock_step", "incomplete"}
            continue
        if abs(i.energy_j - t) > i.uncertainty_bound_j + 0.002 and "clock_step" not in i.flags:
            unflagged_wrong.append((_key(i), i.energy_j, t, sorted(i.flags)))
    assert not unflagged_wrong


@pytest.mark.parametrize("step_s", [-15.0, -3.0])
def test_a_run_across_a_clock_step_keeps_its_energy(step_s):
    """The run and the epoch open across the step: what came before it, the step's own
    reading spacing (bridged on the counter) and what came after, flagged clock_step."""
    out, truth, spans = stepped_run(step_s)
    run = next(i for i in out if i.kind == "run")
    assert "clock_step" in run.flags
    # active energy takes idle power over the real duration, not the stamps' (short by 15 s)
    a, b = spans[_key(run)]
    assert (run.energy_j - run.active_energy_j) / ((b - a) / 1e9) == pytest.approx(50.0, abs=0.5)
    assert run.avg_power_w == pytest.approx(truth[_key(run)] / ((b - a) / 1e9), rel=0.01)
    assert run.energy_j == pytest.approx(truth[_key(run)], abs=run.uncertainty_bound_j + 0.002)
    assert run.uncertainty_bound_j < 0.01 * truth[_key(run)]
    epoch1 = next(i for i in out if i.kind == "epoch" and i.epoch == 0)
    assert epoch1.energy_j == pytest.approx(truth[_key(epoch1)],
                                            abs=epoch1.uncertainty_bound_j + 0.002)  # fmt: skip


def test_after_a_clock_step_unambiguous_intervals_are_exact_and_unflagged():
    out, truth, _ = stepped_run(-3.0)
    # steps stamped wholly before the step, or after the stamps the step made ambiguous
    clean = [i for i in out if i.kind == "step"
             and (i.end_ns < STEP_AT - 3 * S or i.start_ns > STEP_AT + 0.5 * S)]  # fmt: skip
    assert len(clean) > 50
    for i in clean:
        assert "clock_step" not in i.flags and not i.flags - {"idle_unknown"}, (_key(i), i.flags)
        assert abs(i.energy_j - truth[_key(i)]) <= i.uncertainty_bound_j + 0.002


def test_a_late_batch_of_one_devices_readings_is_set_aside_not_merged():
    """Readings of [25, 30) s delivered after those up to 38 s (out of their stream's order):
    an open interval integrated ahead across the then-empty hole must not change its mind
    when the hole fills; the late readings are stored, not joined, and counted."""
    start, end = T0 + 15 * S, T0 + 95 * S
    ms = [marker("run_start", start), marker("epoch_start", start + 50 * MS),
          marker("epoch_end", end - 50 * MS), marker("run_end", end)]  # fmt: skip
    dev = SynthDevice("gpu-0", idle_w=50.0,
                      levels=[(start, 90.0), (T0 + 25 * S, 400.0), (T0 + 27 * S, 90.0),
                              (end, 50.0)])  # fmt: skip
    readings = dev.readings(T0, end + 40 * S)
    a, b = T0 + 25 * S, T0 + 30 * S
    hole = [r for r in readings if a <= r.time_ns < b]
    rest = [r for r in readings if not a <= r.time_ns < b]
    k = next(i for i, r in enumerate(rest) if r.time_ns >= b + 8 * S)
    stream = rest[:k] + hole + rest[k:]
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    out, late = feed_in_stream_order(j, stream, ms)
    assert late == len(hole)
    assert len(out) == 2
    for i in out:
        truth = dev.true_energy(i.start_ns, i.end_ns)
        assert abs(i.energy_j - truth) <= i.uncertainty_bound_j + 0.002
        assert "gap" in i.flags  # the hole is a hole in what the join used


def test_readings_sent_again_with_their_own_stamps_are_not_a_clock_step():
    """A daemon that re-sends readings already joined (a replay from an old cursor): the
    duplicates are behind the newest by far, but their counters are too: not a step."""
    start = T0 + 15 * S
    ms, spans, end = run_markers(start, steps=20, step_ns=300 * MS, gap_ns=50 * MS, epochs=1,
                                 device_uuid="gpu-0")  # fmt: skip
    dev = busy_device("gpu-0", spans, run=(start, end))
    readings = dev.readings(T0, end + 10 * S)
    k = next(i for i, r in enumerate(readings) if r.time_ns >= start + 4 * S)
    stream = readings[:k] + readings[k - 200 : k] + readings[k:]
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    out, late = feed_in_stream_order(j, stream, ms)
    # set aside, not merged again; the newest ~0.2 s of them (two counter updates: within the
    # tolerance) are merged, as duplicates of stamps held (the timeline keeps the first)
    assert 180 <= late < 200
    assert len(out) == 22
    for i in out:
        assert "clock_step" not in i.flags
        truth = dev.true_energy(i.start_ns, i.end_ns)
        assert abs(i.energy_j - truth) <= i.uncertainty_bound_j + 0.002


def test_runs_killed_without_their_end_cost_one_integration_per_chunk(monkeypatch):
    """200 runs killed without RUN_END hold their run and epoch intervals open for good (a
    resumed session would close them). Integrating them ahead costs one piece per device and
    chunk, shared, not one each (before: 1.5 s of CPU per 100 s of readings for 400 of them);
    a live run among them is still exact."""
    dev = SynthDevice("gpu-0", idle_w=60.0)
    ms, t = [], T0 + 5 * S
    for k in range(200):
        rid = f"job{k}"
        ms += [marker("run_start", t, run_id=rid), marker("epoch_start", t + 10 * MS, run_id=rid)]
        t += 100 * MS
    ms += [
        marker("run_start", t + 1 * S, run_id="live"),
        marker("run_end", t + 61 * S, run_id="live"),
    ]
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    readings = dev.readings(T0, t + 40 * S)
    out, _ = feed_in_stream_order(j, readings, [m for m in ms if m.time_ns <= t + 40 * S])
    calls = []
    real = type(j._devices["gpu-0"].timeline).interval
    monkeypatch.setattr(type(j._devices["gpu-0"].timeline), "interval",
                        lambda self, a, b: calls.append((a, b)) or real(self, a, b))  # fmt: skip
    more, _ = feed_in_stream_order(j, dev.readings(t + 40 * S, t + 140 * S, seq0=10**6),
                                   [m for m in ms if m.time_ns > t + 40 * S])  # fmt: skip
    assert len(j.pending_keys()) == 400
    chunks = 100 * S // CFG.chunk_ns
    assert len(calls) <= 2 * chunks + 2  # one shared piece per chunk (+ the live run's end)
    (live,) = [i for i in out + more if i.run_id == "live"]
    truth = dev.true_energy(live.start_ns, live.end_ns)
    assert abs(live.energy_j - truth) <= live.uncertainty_bound_j + 0.002


def two_device_run(step_s: float, stamp_from_ns: int, window_ns=500 * MS, delay=None, cpu_counter=True,
                   extra=(), pause=None):  # fmt: skip
    """A GPU and a CPU device on one node through a clock step of step_s from real
    stamp_from_ns; readings and markers delivered in windows of window_ns (a marker after the
    readings of its window), each device's readings `delay(uuid)` ns late. extra: (delivery
    time, reading) already stamped. Returns (interval, truth) pairs and the summed output
    counts. pause: (a, b) real times no reading is taken in (a stalled sampler)."""
    start = T0 + 15 * S
    ms, spans, end = run_markers(start, steps=40, step_ns=300 * MS, gap_ns=50 * MS, epochs=2,
                                 device_uuid="gpu-0")  # fmt: skip
    gpu = busy_device("gpu-0", spans, run=(start, end))
    cpu = busy_device("cpu-0", spans, run=(start, end), idle_w=30.0, run_w=60.0, busy_w=120.0)
    cpu.kind = "cpu"

    def stamp(t: int) -> int:
        return t + (int(step_s * S) if t >= stamp_from_ns else 0)

    events = []
    for d in (gpu, cpu):
        for r in d.readings(T0, end + 20 * S, seq0=0 if d is gpu else 10**6):
            if pause and pause[0] <= r.time_ns < pause[1]:
                continue
            if d is cpu and not cpu_counter:
                r = dataclasses.replace(r, energy_j=None)
            late = (delay or (lambda u: 0))(d.uuid)
            events.append((r.time_ns + late, 0, dataclasses.replace(r, time_ns=stamp(r.time_ns))))
    events += [(m.time_ns, 1, dataclasses.replace(m, time_ns=stamp(m.time_ns))) for m in ms]
    events += [(at, 0, r) for at, r in extra]
    events.sort(key=lambda e: (e[0], e[1]))
    real = {(m.key, m.kind.endswith("_end")): m.time_ns for m in ms}
    j = Joiner(CFG)
    j.add_node(node("n1", [gpu, cpu]))
    out, counts, i, edge = [], {"late": 0, "steps": 0}, 0, events[0][0]
    while i < len(events):
        edge += window_ns
        batch = []
        while i < len(events) and events[i][0] < edge:
            batch.append(events[i])
            i += 1
        if readings := [e[2] for e in batch if e[1] == 0]:
            j.add_readings("n1", readings)
        if markers := [e[2] for e in batch if e[1] == 1]:
            j.add_markers("n1", markers)
        res = j.poll()
        out += res.intervals
        counts["late"] += res.readings_late
        counts["steps"] += res.clock_steps
    devices = {"gpu-0": gpu, "cpu-0": cpu}
    pairs = [(i, devices[i.device_uuid].true_energy(real[(_key(i), False)], real[(_key(i), True)]))
             for i in out]  # fmt: skip
    return pairs, counts


def unflagged_wrong(pairs):
    explain = {"clock_step", "incomplete", "late", "gap"}
    return [
        (_key(i), i.device_uuid, i.energy_j, truth, sorted(i.flags))
        for i, truth in pairs
        if not i.flags & explain
        and (i.energy_j is None or abs(i.energy_j - truth) > i.uncertainty_bound_j + 0.002)
    ]


@pytest.mark.parametrize("step_s", [-3.0, -15.0])
def test_a_step_inside_a_block_with_markers_of_the_new_clock_after_it(step_s):
    """1 s blocks, the step 0.1 s into one: the markers that come with the block are stamped
    by the new clock; they must not be taken as the old clock's (they were sealed on the old
    timeline, 79 J for 90 J, with no flag)."""
    pairs, counts = two_device_run(step_s, T0 + 30_100 * MS, window_ns=1 * S)
    assert counts["steps"] == 1
    assert len(pairs) == 86 and not unflagged_wrong(pairs)


def test_a_step_seen_by_two_devices_in_different_polls_is_one_step():
    """The CPU's readings come 600 ms after the GPU's: the GPU shows the step one poll before
    the CPU; the node stepped once (it was counted twice, and an epoch begun between the two
    got the old timeline's energy on the CPU)."""
    pairs, counts = two_device_run(
        -3.0, T0 + 30 * S, delay=lambda u: 600 * MS if u == "cpu-0" else 0
    )
    assert counts["steps"] == 1
    assert not unflagged_wrong(pairs)
    assert not [k for (k, u, e, t, f) in ([(_key(i), i.device_uuid, i.energy_j, t, i.flags)
                                           for i, t in pairs]) if e is not None and
                abs(e - t) > 0.05 * t + 10 and k[2] == "epoch"]  # fmt: skip


def test_a_device_without_a_counter_stepping_back_is_flagged_not_wrong():
    """No counter, no way to tell a step from late readings: its readings behind are set
    aside as late and the intervals over them say so."""
    pairs, counts = two_device_run(-3.0, T0 + 30 * S, cpu_counter=False)
    assert counts["late"] > 0 and not unflagged_wrong(pairs)


def test_a_hostile_pair_at_the_int64_minimum_is_not_a_clock_step():
    """Two readings stamped -2^63 with counters above the newest: no new timeline from there
    (its origin made later stamps overflow: every later interval had no energy)."""
    r = SynthDevice("gpu-0").readings(T0, T0 + 20 * MS)[0]
    hostile = [(T0 + 30 * S + k, dataclasses.replace(r, seq=9 * 10**6 + k, time_ns=-(1 << 63) + k,
                                                     energy_j=1e9 + k, power_w=100.0))
               for k in range(2)]  # fmt: skip
    pairs, counts = two_device_run(0.0, T0 + 30 * S, extra=hostile)
    assert counts["steps"] == 0 and counts["late"] == 2
    assert not unflagged_wrong(pairs)
    assert all(i.energy_j is not None for i, _ in pairs)


def test_one_step_per_device_and_flush_bounds_a_flood_of_steps():
    """Readings going back 5 s every third one, counters going on (hostile): one step is
    followed per device and flush, the rest set aside; the cost stays that of one."""
    dev = SynthDevice("gpu-0", idle_w=60.0)
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    j.add_readings("n1", dev.readings(T0, T0 + 20 * S))
    j.poll()
    block = dev.readings(T0 + 20 * S, T0 + 80 * S, seq0=10**6)
    flood = [
        dataclasses.replace(r, time_ns=r.time_ns - (k // 3) * 5 * S) for k, r in enumerate(block)
    ]
    j.add_readings("n1", flood)
    res = j.poll()
    assert res.clock_steps == 1 and res.readings_late > 0.9 * len(flood)


@pytest.mark.parametrize("lead_ms", [1000, 3000])
def test_markers_ahead_of_readings_across_a_step_are_flagged(lead_ms):
    """Readings a second or three behind their markers (a stalled sampler): intervals of the
    new clock are computed from the old clock's readings before the readings show the step.
    The markers show it first (a rank's marker stamped behind its newest): their stamps are
    flagged ambiguous (3 s behind: 5 steps were 59-80 J for 90 J, unflagged)."""
    pairs, counts = two_device_run(-3.0, T0 + 30 * S, delay=lambda u: lead_ms * MS)
    assert counts["steps"] == 1 and not unflagged_wrong(pairs)
    stepped = [i for i, _ in pairs if i.kind == "step" and i.end_ns < i.start_ns]
    assert stepped and all({"clock_step", "incomplete"} <= i.flags for i in stepped)


def test_a_pause_in_the_readings_is_a_gap_not_a_clock_step():
    """No readings for 3 s (a stalled sampler), the counter going on meanwhile: a gap."""
    pairs, counts = two_device_run(0.0, T0 + 30 * S, pause=(T0 + 30 * S, T0 + 33 * S))
    assert counts["steps"] == 0 and not unflagged_wrong(pairs)
    run = next(i for i, _ in pairs if i.kind == "run" and i.device_uuid == "gpu-0")
    assert "gap" in run.flags and "clock_step" not in run.flags


def test_a_collector_restarted_after_a_clock_step_replays_each_stream_in_its_order(db_url):
    """The rebuild replays stored readings and open markers in their daemon stream's order
    (seq), as the live join took them. In time order the two clocks' readings interleaved
    again, and markers stamped by the new clock went to the old one's readings: steps of the
    run still open at the crash read 79.5 J for 88 J, and one 4,120 J."""
    ms, dev, readings, stamp = stepped_device(-15.0)

    # the stream as stepped_run delivers it, numbered: 25 readings, then the markers due
    stream, order, mi = [], sorted(ms, key=lambda m: m.time_ns), 0
    for i in range(0, len(readings), 25):
        chunk = readings[i : i + 25]
        stream += [(r.time_ns, r) for r in chunk]
        due = [m for m in order[mi:] if m.time_ns <= chunk[-1].time_ns]
        mi += len(due)
        stream += [(chunk[-1].time_ns, m) for m in due]
    stream += [(readings[-1].time_ns, m) for m in order[mi:]]
    items = [(real, dataclasses.replace(x, seq=k, time_ns=stamp(x.time_ns)))
             for k, (real, x) in enumerate(stream)]  # fmt: skip
    crash = STEP_AT + 5 * S  # real time: after the step; the run and epoch 1 still open
    n = node("n1", [dev])
    engine = create_db_engine(db_url)
    migrate(engine)
    batch = WriteBatch()
    batch.nodes[n.boot_id] = n
    batch.add_readings(n.boot_id, [x for real, x in items
                                   if real <= crash and not isinstance(x, MarkerRec)])  # fmt: skip
    batch.markers = [(n.boot_id, x) for real, x in items
                     if real <= crash and isinstance(x, MarkerRec)]  # fmt: skip
    Store(engine).write(batch)
    ((pk, _, _, seq0),) = store_reads.replay_boots(engine, T0, ["n1"])
    rows = [r for chunk in store_reads.boot_readings(engine, pk, seq0) for r in chunk]
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)  # the stream's order

    j = Joiner(CFG)
    out, steps = [], []

    def emit(o, _aggregates):
        out.extend(o.intervals)
        steps.append(o.clock_steps)

    done = restore_nodes(engine, CollectorConfig(), j, LiveState(), SecondAggregator(), ["n1"],
                         emit)  # fmt: skip
    engine.dispose()
    assert done.markers == len(batch.markers) and done.readings > 1000
    later = [x for real, x in items if real > crash]
    for i in range(0, len(later), 25):
        part = later[i : i + 25]
        j.add_readings("n1", [x for x in part if not isinstance(x, MarkerRec)])
        j.add_markers("n1", [x for x in part if isinstance(x, MarkerRec)])
        emit(j.poll(), [])
    assert sum(steps) == 1
    live = {_key(i): i for i in stepped_run(-15.0)[0]}  # the same run joined without a restart
    assert sorted(_key(i) for i in out) == sorted(live)
    for i in out:
        want = live[_key(i)]
        # over-flagged at most: the replay polls once per chunk, so it sees the step before it
        # ends the intervals whose stamps the step made ambiguous; the live join had ended them
        assert i.flags - {"clock_step"} == want.flags - {"clock_step"}, (_key(i), i.flags)
        assert want.flags <= i.flags, (_key(i), i.flags, want.flags)
        if want.energy_j is None:
            assert i.energy_j is None
        else:
            assert i.energy_j == pytest.approx(want.energy_j, abs=1e-6), _key(i)


def test_the_pipeline_joins_a_message_in_its_stream_order_across_a_clock_step():
    """A daemon message holds readings and markers in stream order. The pipeline gave the join
    a message's readings first, then its markers: an end marker stamped just before a 15 s
    step back, in a message whose later readings carry the step, went to the new clock's
    readings, and its step read 3,772 J for 88 J (flagged clock_step)."""
    ms, dev, readings, stamp = stepped_device(-15.0)

    # the daemon's stream: each marker 5 ms after its moment, numbered with the readings
    items = sorted([(r.time_ns, 0, r) for r in readings] + [(m.time_ns + 5 * MS, 1, m) for m in ms],
                   key=lambda x: (x[0], x[1]))  # fmt: skip
    items = [dataclasses.replace(x, seq=k, time_ns=stamp(x.time_ns))
             for k, (_, _, x) in enumerate(items)]  # fmt: skip
    j = Joiner(CFG)
    n = node("n1", [dev])
    pipe = Pipeline(j, SecondAggregator({}), LiveState(), writer=None)
    batch = WriteBatch()
    for i in range(0, len(items), 25):
        part = items[i : i + 25]
        rd = [x for x in part if not isinstance(x, MarkerRec)]
        mk = [x for x in part if isinstance(x, MarkerRec)]
        pipe._process(StreamChunk("n1:1", "n1", n.boot_id, part[0].seq, part[-1].seq + 1, rd, mk,
                                  node=n if i == 0 else None), batch)  # fmt: skip
        pipe._poll(batch)
    real = {(m.key, m.kind.endswith("_end")): m.time_ns for m in ms}
    assert len(batch.intervals) == 83
    for i in batch.intervals:
        if i.energy_j is None:
            assert i.flags & {"clock_step", "incomplete"}
            continue
        truth = dev.true_energy(real[(_key(i), False)], real[(_key(i), True)])
        assert abs(i.energy_j - truth) <= i.uncertainty_bound_j + 0.002, (
            _key(i),
            i.energy_j,
            truth,
        )
