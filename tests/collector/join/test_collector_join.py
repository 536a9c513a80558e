"""The pure streaming join: pairing, watermark, late readings, out-of-order input, restart."""

from __future__ import annotations

import dataclasses
import random
import time

import pytest

from collector.energy.timeline import DeviceTimeline, Sample
from collector.join.joiner import JoinConfig, Joiner
from collector.store.aggregate import SecondAggregator
from parawatt_proto.records import NodeRec
from tests.collector.synth import MS, T0, S, SynthDevice, marker, node, run_markers

CFG = JoinConfig(late_bound_ns=2 * S, chunk_ns=2 * S, keep_ns=10 * S, idle_window_ns=10 * S,
                 idle_guard_ns=1 * S, idle_update_ns=5 * S, idle_min_s=2.0,
                 idle_bucket_ns=1 * S)  # fmt: skip


def busy_device(uuid: str, spans, run=(0, 0), idle_w=50.0, run_w=90.0, busy_w=300.0):
    d = SynthDevice(uuid, idle_w=idle_w)
    levels = [(run[0], run_w)] if run[1] else []
    for a, b in spans:
        levels += [(a, busy_w), (b, run_w)]
    if run[1]:
        levels.append((run[1], idle_w))
    d.levels = sorted(levels)
    return d


def feed(joiner: Joiner, host: str, readings, markers=(), every=25, shuffle_markers=False):
    """Readings in stream-sized chunks; markers interleaved by time; poll after each chunk."""
    markers = sorted(markers, key=lambda m: m.time_ns)
    if shuffle_markers:
        random.Random(1).shuffle(markers)
    out, mi = [], 0
    for i in range(0, len(readings), every):
        chunk = readings[i : i + every]
        joiner.add_readings(host, chunk)
        due = [m for m in markers[mi:] if m.time_ns <= chunk[-1].time_ns] if not shuffle_markers \
            else markers[mi : mi + 1]  # fmt: skip
        joiner.add_markers(host, due)
        mi += len(due)
        res = joiner.poll()
        out.extend(res.intervals)
    return out


@pytest.fixture
def one_run():
    start = T0 + 15 * S
    ms, spans, end = run_markers(start, steps=12, step_ns=300 * MS, gap_ns=50 * MS, epochs=2,
                                 device_uuid="gpu-0")  # fmt: skip
    dev = busy_device("gpu-0", spans, run=(start, end))
    readings = dev.readings(T0, end + 5 * S)
    return dev, ms, spans, readings, (start, end)


def by_key(intervals):
    return {(i.run_id, i.rank, i.kind, i.epoch, i.step, i.device_uuid): i for i in intervals}


def test_every_step_epoch_and_run_interval_matches_truth(one_run):
    dev, ms, spans, readings, (start, end) = one_run
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    got = by_key(feed(j, "n1", readings, ms))
    steps = [i for i in got.values() if i.kind == "step"]
    assert len(steps) == 24 and sorted(i.step for i in steps) == list(range(24))
    for i in steps:
        truth = dev.true_energy(i.start_ns, i.end_ns)
        assert abs(i.energy_j - truth) <= i.uncertainty_bound_j + 0.002
        assert i.source == "counter" and i.coverage == 1.0 and "late" not in i.flags
    for e in range(2):
        epoch = got[("r1", 0, "epoch", e, 0, "gpu-0")]
        truth = dev.true_energy(epoch.start_ns, epoch.end_ns)
        assert epoch.energy_j == pytest.approx(truth, rel=1e-3)
    run = got[("r1", 0, "run", 0, 0, "gpu-0")]
    assert run.energy_j == pytest.approx(dev.true_energy(start, end), rel=1e-3)
    assert not j.pending_keys()


def test_epoch_equals_sum_of_steps_plus_gaps(one_run):
    """Additivity survives the chunked integration of long intervals (chunk 2 s < epoch)."""
    dev, ms, spans, readings, _ = one_run
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    got = feed(j, "n1", readings, ms)
    timeline = DeviceTimeline()
    timeline.extend(Sample(r.time_ns, r.power_w, r.energy_j) for r in readings)
    for e in range(2):
        epoch = next(i for i in got if i.kind == "epoch" and i.epoch == e)
        steps = sorted((i for i in got if i.kind == "step" and i.epoch == e), key=lambda i: i.step)
        bounds = (
            [epoch.start_ns] + [t for s in steps for t in (s.start_ns, s.end_ns)] + [epoch.end_ns]
        )
        gaps = sum(
            timeline.interval(a, b).energy_j for a, b in zip(bounds[::2], bounds[1::2], strict=True)
        )
        assert epoch.energy_j == pytest.approx(sum(s.energy_j for s in steps) + gaps, abs=0.001)


def test_interval_waits_for_settled_readings(one_run):
    dev, ms, spans, readings, _ = one_run
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    a, b = spans[0]
    j.add_markers("n1", [m for m in ms if m.kind in ("run_start", "epoch_start") or m.step == 0])
    j.add_readings("n1", [r for r in readings if r.time_ns <= b])
    assert not [i for i in j.poll().intervals if i.kind == "step"]
    j.add_readings("n1", [r for r in readings if b < r.time_ns <= b + 500 * MS])
    assert [i.step for i in j.poll().intervals if i.kind == "step"] == [0]


def test_out_of_order_markers_give_the_same_intervals(one_run):
    dev, ms, spans, readings, _ = one_run
    results = []
    for shuffle in (False, True):
        j = Joiner(CFG)
        j.add_node(node("n1", [dev]))
        j.add_markers("n1", sorted(ms, key=lambda m: -m.time_ns) if shuffle else ms)
        results.append(by_key(feed(j, "n1", readings)))
    assert results[0].keys() == results[1].keys() and len(results[0]) == 24 + 2 + 1
    for k, i in results[0].items():
        assert results[1][k].energy_j == pytest.approx(i.energy_j, abs=1e-6)


def delayed(joiner: Joiner, host: str, readings, markers, delay_ns: int, ends_only=False):
    """Readings in stream-sized chunks; each marker arrives once readings delay_ns past it
    have (the trainer's client retrying while its daemon restarts, a stalled sender); with
    ends_only, start markers arrive on time."""
    waiting, out = sorted(markers, key=lambda m: m.time_ns), []
    for i in range(0, len(readings), 25):
        chunk = readings[i : i + 25]
        joiner.add_readings(host, chunk)
        now = chunk[-1].time_ns
        late = lambda m: delay_ns if m.kind.endswith("_end") or not ends_only else 0  # noqa: E731
        due = [m for m in waiting if m.time_ns + late(m) <= now]
        waiting = [m for m in waiting if m.time_ns + late(m) > now]
        joiner.add_markers(host, due)
        out.extend(joiner.poll().intervals)
    joiner.add_markers(host, waiting)
    return out + joiner.poll().intervals


@pytest.mark.parametrize("delay_s", [3, 6, 9])
def test_end_markers_late_by_less_than_keep_give_exact_energy(one_run, delay_s):
    """Open intervals are integrated ahead in pieces (to free readings), but never into the
    keep_ns behind the watermark: an end marker that arrives later than the pieces went
    would have taken their energy past its end (a 0.3 s step measured 1,325 J for 90 J)."""
    dev, ms, spans, readings, (start, end) = one_run
    for ends_only in (False, True):
        j = Joiner(CFG)
        j.add_node(node("n1", [dev]))
        got = by_key(delayed(j, "n1", readings, ms, delay_s * S, ends_only))
        assert len(got) == 24 + 2 + 1 and not j.pending_keys()
        for i in got.values():
            truth = dev.true_energy(i.start_ns, i.end_ns)
            assert abs(i.energy_j - truth) <= i.uncertainty_bound_j + 0.002, (i.kind, i.step)
        run = got[("r1", 0, "run", 0, 0, "gpu-0")]
        assert run.energy_j == pytest.approx(dev.true_energy(start, end), rel=1e-3)


def test_end_marker_later_than_keep_gets_no_energy_rather_than_a_wrong_one(one_run):
    """Past keep_ns the readings an end needs may be gone: such an interval says so (no
    energy, flagged late and incomplete) instead of carrying energy from beyond its end."""
    dev, ms, spans, readings, _ = one_run
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    got = delayed(j, "n1", readings, ms, CFG.keep_ns + 5 * S, ends_only=True)
    assert len(got) == 24 + 2 + 1 and not j.pending_keys()
    unknown = [i for i in got if i.energy_j is None]
    assert unknown and all({"late", "incomplete"} <= i.flags for i in unknown)
    for i in got:
        if i.energy_j is not None:
            truth = dev.true_energy(i.start_ns, i.end_ns)
            assert abs(i.energy_j - truth) <= i.uncertainty_bound_j + 0.002, (i.kind, i.step)


def test_one_reading_stamped_a_year_ahead_is_set_aside(one_run):
    """A stray stamp (a clock stepped ahead and back, a hostile daemon) is stored but not
    joined: it would move the node's watermark a year on, and trimming, which waits for the
    watermark to move on by keep_ns / 2, would stop for that year (readings held without
    bound). Every interval stays exact and the readings held stay bounded."""
    dev, ms, spans, readings, _ = one_run
    ahead = time.time_ns() - T0 + 365 * 24 * 3600 * S  # a year past the collector's clock too
    k = len(readings) // 2
    stray = dataclasses.replace(readings[k], time_ns=readings[k].time_ns + ahead, seq=10**9)
    more = dev.readings(readings[-1].time_ns + 20 * MS, readings[-1].time_ns + 60 * S, seq0=10**6)
    held, seconds = [], []
    for strays in ([], [stray]):
        j, agg = Joiner(CFG), SecondAggregator()
        j.add_node(node("n1", [dev]))
        j.add_markers("n1", ms)
        agg.add(j.add_readings("n1", readings[:k]))
        assert not len(j.add_readings("n1", strays))  # nor aggregated (rebuild, pipeline)
        assert j.poll().readings_ahead == len(strays)
        seconds.append(len(agg.add(j.add_readings("n1", readings[k:] + more))))
        got = by_key(j.poll().intervals)
        assert j.watermark_ns("n1") == more[-1].time_ns
        assert len(got) == 24 + 2 + 1 and not j.pending_keys()
        for i in got.values():
            truth = dev.true_energy(i.start_ns, i.end_ns)
            assert abs(i.energy_j - truth) <= i.uncertainty_bound_j + 0.002 and not i.flags
        held.append(len(j._devices["gpu-0"].timeline._t))
    assert held[1] == held[0] < len(more)  # 60 s of readings after the run: trimmed as ever
    assert seconds[1] == seconds[0] > 60


def test_a_stamp_at_the_int64_ends_sets_aside_only_itself(one_run):
    """A hostile daemon's stamps at the ends of int64 (differences from them would wrap):
    the one far ahead is set aside, the one far behind is taken like any old reading, and
    the readings around them are joined."""
    dev, ms, spans, readings, _ = one_run
    shift = time.time_ns() - T0
    live = [dataclasses.replace(r, time_ns=r.time_ns + shift) for r in readings[:100]]
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    j.add_readings("n1", live[:5])
    hostile = [dataclasses.replace(live[5], time_ns=-(2**63)),
               dataclasses.replace(live[6], time_ns=2**63 - 1)]  # fmt: skip
    taken = j.add_readings("n1", hostile + live[7:])
    assert len(taken) == len(live) - 6 and j.poll().readings_ahead == 1
    assert j.watermark_ns("n1") == live[-1].time_ns


def test_a_long_backlog_ahead_of_our_clock_is_taken_whole(one_run):
    """A node whose clock runs ahead of the collector's replays a backlog far longer than
    max_ahead_ns in one block: no jump in it, nothing set aside."""
    dev, ms, spans, readings, _ = one_run
    ahead = time.time_ns() - T0 + 3600 * S  # the node's clock an hour ahead of ours
    moved = [dataclasses.replace(r, time_ns=r.time_ns + ahead) for r in readings]
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    j.add_readings("n1", moved[:10])
    taken = j.add_readings("n1", moved[10:])  # 40 s of readings in one block
    assert len(taken) == len(moved) - 10 and j.poll().readings_ahead == 0
    assert j.watermark_ns("n1") == moved[-1].time_ns


def test_a_node_whose_clock_really_moved_on_is_followed(one_run):
    """Whole blocks stamped far ahead, one after another, are the node's clock: after
    AHEAD_CONFIRM of them the join takes them and the watermark follows."""
    from collector.join.joiner import AHEAD_CONFIRM

    dev, ms, spans, readings, _ = one_run
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    j.add_readings("n1", readings[:100])
    ahead = time.time_ns() - T0 + 365 * 24 * 3600 * S
    later = [dataclasses.replace(r, time_ns=r.time_ns + ahead) for r in readings[100:200]]
    set_aside = 0
    for i in range(0, len(later), 10):
        j.add_readings("n1", later[i : i + 10])
        set_aside += j.poll().readings_ahead
    assert set_aside == 10 * (AHEAD_CONFIRM - 1)
    assert j.watermark_ns("n1") == later[-1].time_ns


def test_lagging_device_is_computed_after_the_late_bound_and_flagged():
    a_dev, b_dev = SynthDevice("gpu-0"), SynthDevice("gpu-1")
    j = Joiner(CFG)
    j.add_node(node("n1", [a_dev, b_dev]))
    t = T0 + 5 * S
    j.add_markers("n1", [marker("step_start", t, device_uuid="gpu-0"),
                         marker("step_end", t + S, device_uuid="gpu-0")])  # fmt: skip
    j.add_readings("n1", a_dev.readings(T0, t + 500 * MS))  # gpu-0 stops mid-step
    j.add_readings("n1", b_dev.readings(T0, t + S + CFG.late_bound_ns - 100 * MS, seq0=10**6))
    assert not j.poll().intervals
    j.add_readings(
        "n1",
        b_dev.readings(t + S + CFG.late_bound_ns, t + S + CFG.late_bound_ns + 1, seq0=2 * 10**6),
    )
    (i,) = j.poll().intervals
    assert {"late", "incomplete"} <= i.flags and i.coverage < 0.6


def test_idle_power_and_active_energy(one_run):
    dev, ms, spans, readings, (start, end) = one_run
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    out = []
    for i in range(0, len(readings), 25):
        j.add_readings("n1", readings[i : i + 25])
        j.add_markers(
            "n1",
            [
                m
                for m in ms
                if readings[i].time_ns
                <= m.time_ns
                <= readings[min(i + 24, len(readings) - 1)].time_ns
            ],
        )
        res = j.poll()
        out.append(res)
    updates = [u for r in out for u in r.rank_updates]
    assert len(updates) == 1 and updates[0].idle_power_w == pytest.approx(50.0)
    assert updates[0].start_temperature_c == pytest.approx(45.0)
    run = next(i for r in out for i in r.intervals if i.kind == "run")
    assert run.active_energy_j == pytest.approx(run.energy_j - 50.0 * run.duration_s)
    idle = [u for r in out for u in r.idle_updates if u.idle_power_w is not None]
    assert idle and all(u.idle_power_w == pytest.approx(50.0) for u in idle)


def test_cpu_and_dram_get_epoch_and_run_intervals_of_local_rank_0(one_run):
    dev, ms, spans, readings, (start, end) = one_run
    cpu = SynthDevice("cpu-0", kind="cpu", idle_w=30.0)
    j = Joiner(CFG)
    j.add_node(node("n1", [dev, cpu]))
    both = sorted(readings + cpu.readings(T0, end + 5 * S, seq0=10**6), key=lambda r: r.time_ns)
    got = feed(j, "n1", both, ms)
    cpu_intervals = [i for i in got if i.device_uuid == "cpu-0"]
    assert sorted(i.kind for i in cpu_intervals) == ["epoch", "epoch", "run"]
    run = next(i for i in cpu_intervals if i.kind == "run")
    assert run.energy_j == pytest.approx(30.0 * (end - start) / S, rel=1e-3)


def test_resent_marker_is_ignored_and_run_end_drops_orphans(one_run):
    dev, ms, spans, readings, _ = one_run
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    cut = spans[5][1] + 10 * MS
    first = feed(
        j, "n1", [r for r in readings if r.time_ns <= cut], [m for m in ms if m.time_ns <= cut]
    )
    again = [m for m in ms if m.kind.startswith("step") and m.step == 0]
    orphan = marker("step_start", spans[3][0] + 10 * MS, step=999, device_uuid="gpu-0")
    rest = [m for m in ms if m.time_ns > cut] + again + [orphan]
    later = feed(j, "n1", [r for r in readings if r.time_ns > cut], rest)
    keys = [(i.kind, i.epoch, i.step) for i in first + later]
    assert len(keys) == len(set(keys)) == 27
    assert not j.pending_keys()


def test_restart_rebuild_from_open_markers_and_stored_readings(one_run):
    """A second joiner given only what the database would hold at the crash (markers whose
    intervals are missing, readings from before the oldest of them) completes the same set."""
    dev, ms, spans, readings, _ = one_run
    full = Joiner(CFG)
    full.add_node(node("n1", [dev]))
    want = by_key(feed(full, "n1", readings, ms))

    cut = spans[9][0] + 100 * MS  # crash inside step 9 of epoch 0
    before = [r for r in readings if r.time_ns <= cut]
    a = Joiner(CFG)
    a.add_node(node("n1", [dev]))
    done = by_key(feed(a, "n1", before, [m for m in ms if m.time_ns <= cut]))
    done_keys = {k[:5] for k in done}
    open_ms = [m for m in ms if m.time_ns <= cut and m.key not in done_keys]
    b = Joiner(CFG)
    b.add_node(node("n1", [dev]))
    b.add_markers("n1", open_ms)
    since = min(m.time_ns for m in open_ms) - CFG.idle_window_ns - CFG.idle_guard_ns - S
    rest = by_key(feed(b, "n1", [r for r in readings if r.time_ns >= since],
                       [m for m in ms if m.time_ns > cut]))  # fmt: skip
    assert not done.keys() & rest.keys()
    assert done.keys() | rest.keys() == want.keys()
    for k, i in rest.items():
        assert i.energy_j == pytest.approx(want[k].energy_j, abs=1e-6)


def test_device_without_energy_counter_gets_power_integrated_intervals(one_run):
    """E.g. a GPU older than Volta: every interval from the power integral, flagged, within
    its (larger) stated uncertainty, long ones through the chunked accumulation too."""
    dev, ms, spans, readings, (start, end) = one_run
    for r in readings:
        r.energy_j = None
    rec = dataclasses.replace(dev.rec(), has_energy_counter=False, counter_update_s=None)
    j = Joiner(CFG)
    j.add_node(NodeRec("n1", "boot-1", devices=(rec,)))
    got = feed(j, "n1", readings, ms)
    assert len(got) == 24 + 2 + 1 and not j.pending_keys()
    for i in got:
        truth = dev.true_energy(i.start_ns, i.end_ns)
        assert i.source == "power" and "no_counter" in i.flags and i.coverage == 1.0
        assert abs(i.energy_j - truth) <= i.uncertainty_bound_j + 1e-6, i.kind  # bound is tight
    run = next(i for i in got if i.kind == "run")
    assert run.energy_j == pytest.approx(dev.true_energy(start, end), rel=0.01)


def test_markers_of_a_device_the_daemon_does_not_measure_are_counted_not_kept(one_run, caplog):
    """E.g. a MIG instance's uuid that NVML lists under its GPU: no interval, and no markers
    left waiting forever; counted (parawatt_unmeasured_markers) and warned about once."""
    dev, ms, spans, readings, _ = one_run
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    lost = [dataclasses.replace(m, rank=1, local_rank=1, device_uuid="MIG-x") for m in ms]
    with caplog.at_level("WARNING"):
        j.add_markers("n1", lost)
    assert j.poll().unmeasured_markers == len(lost) and not j.pending_keys()
    assert sum("MIG-x" in r.message for r in caplog.records) == 1
    got = feed(j, "n1", readings, ms)
    assert len(got) == 24 + 2 + 1 and {i.rank for i in got} == {0}
