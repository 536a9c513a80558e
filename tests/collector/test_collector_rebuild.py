"""A collector restarted mid-run (collector/rebuild.py): what it rebuilds from the database and
the stream that goes on must equal what one collector running throughout computed."""

from __future__ import annotations

import dataclasses

import pytest

from collector.config import CollectorConfig
from collector.join.joiner import Joiner
from collector.metrics.state import LiveState
from collector.rebuild import restore_nodes
from collector.store import reads as store_reads
from collector.store.aggregate import SecondAggregator
from collector.store.db import create_db_engine, migrate
from collector.store.store import Store
from collector.store.writebatch import WriteBatch
from parawatt_proto.records import MarkerRec
from tests.collector.join.test_collector_join import CFG, busy_device
from tests.collector.synth import MS, T0, S, SynthDevice, node, run_markers

START = T0 + 15 * S


def stream(devices, markers, end_ns: int, delay_ns: int = 5 * MS):
    """The node's daemon stream, numbered: (real time, item); readings every 20 ms, each marker
    `delay_ns` after its stamp (what the trainer's RPC and the daemon's queue take)."""
    items = [(r.time_ns, 0, r) for d in devices for r in d.readings(T0, end_ns)]
    items += [(m.time_ns + delay_ns, 1, m) for m in markers]
    items.sort(key=lambda x: (x[0], x[1]))
    return [(real, dataclasses.replace(x, seq=k)) for k, (real, _, x) in enumerate(items)]


class Pipeline:
    """collector.pipeline in miniature: 25 items a message, joined, written in one batch."""

    def __init__(self, devices, engine=None, joiner=None, aggregator=None):
        self.node = node("n1", devices)
        self.j = joiner or Joiner(CFG)
        if joiner is None:
            self.j.add_node(self.node)
        self.agg = aggregator or SecondAggregator()
        self.store = Store(engine) if engine is not None else None
        self.out = []

    def feed(self, items, every: int = 25):
        for i in range(0, len(items), every):
            part = items[i : i + every]
            readings = [x for _, x in part if not isinstance(x, MarkerRec)]
            markers = [x for _, x in part if isinstance(x, MarkerRec)]
            b = WriteBatch()
            b.nodes[self.node.boot_id] = self.node
            if readings:
                b.add_readings(self.node.boot_id, readings)
                b.aggregates += self.agg.add(self.j.add_readings("n1", readings))
            if markers:
                b.markers = [(self.node.boot_id, m) for m in markers]
                self.j.add_markers("n1", markers)
            o = self.j.poll()
            self.out += o.intervals
            b.intervals, b.rank_updates, b.idle_updates = (
                o.intervals,
                o.rank_updates,
                o.idle_updates,
            )
            b.cursors[self.node.boot_id] = ("n1:1", part[-1][1].seq + 1, part[-1][0])
            if self.store is not None:
                self.store.write(b)


def crash_and_restart(db_url, devices, items, crash_ns, stored_instead=()):
    """One collector up to crash_ns (its database), a new one restored from it and fed the
    rest; returns (intervals of both, what the restore did). stored_instead: readings the
    database holds in place of those of their seq (written first: the store keeps the first
    of a seq), which the first collector's join did not take."""
    engine = create_db_engine(db_url)
    migrate(engine)
    first = Pipeline(devices, engine)
    if stored_instead:
        b = WriteBatch()
        b.nodes[first.node.boot_id] = first.node
        b.add_readings(first.node.boot_id, list(stored_instead))
        first.store.write(b)
    first.feed([x for x in items if x[0] <= crash_ns])
    j = Joiner(CFG)
    agg = SecondAggregator(store_reads.aggregated_until(engine))
    got = []
    done = restore_nodes(engine, CollectorConfig(), j, LiveState(), agg, ["n1"],
                         lambda o, _a: got.extend(o.intervals))  # fmt: skip
    second = Pipeline(devices, joiner=j, aggregator=agg)
    second.feed([x for x in items if x[0] > crash_ns])
    engine.dispose()
    return first.out + got + second.out, done


def same(got, want) -> None:
    key = lambda i: (i.run_id, i.rank, i.kind, i.epoch, i.step, i.device_uuid)  # noqa: E731
    g, w = {key(i): i for i in got}, {key(i): i for i in want}
    assert len(g) == len(got) and sorted(g) == sorted(w)
    for k, i in g.items():
        assert i.flags == w[k].flags, (k, i.flags, w[k].flags)
        for f in ("energy_j", "active_energy_j"):
            a, b = getattr(i, f), getattr(w[k], f)
            assert (a is None) == (b is None) and (a is None or a == pytest.approx(b, abs=1e-6)), (
                k, f, a, b)  # fmt: skip


def a_run(steps: int = 12):
    ms, spans, end = run_markers(START, steps=steps, step_ns=300 * MS, gap_ns=50 * MS, epochs=2,
                                 device_uuid="gpu-0")  # fmt: skip
    return ms, spans, end, busy_device("gpu-0", spans, run=(START, end))


def test_markers_reaching_their_daemon_late_find_their_readings_after_a_restart(db_url):
    """Markers 4 s behind their stamps: the run_start is not stored at a crash 3 s into the run.
    The replay started at the oldest open marker stored, after the run's start: the run came
    out without energy (incomplete), its first epoch at 606 J for 1,139 J."""
    ms, spans, end, dev = a_run()
    items = stream([dev], ms, end + 20 * S, delay_ns=4 * S)
    live = Pipeline([dev])
    live.feed(items)
    got, _ = crash_and_restart(db_url, [dev], items, spans[9][0] + 100 * MS)
    same(got, live.out)


def test_cpu_intervals_keep_their_idle_power_after_a_restart(db_url):
    """The database keeps a rank's GPU idle power; the node's CPU, whose epoch and run intervals
    go with local rank 0, was idle_unknown, with no active energy, after every restart."""
    ms, spans, end, dev = a_run()
    cpu = SynthDevice("cpu-0", kind="cpu", idle_w=30.0, levels=[(START, 80.0), (end, 30.0)])
    items = stream([dev, cpu], ms, end + 20 * S)
    live = Pipeline([dev, cpu])
    live.feed(items)
    got, _ = crash_and_restart(db_url, [dev, cpu], items, spans[5][0] + 100 * MS)
    same(got, live.out)
    run = next(i for i in got if i.kind == "run" and i.device_uuid == "cpu-0")
    assert "idle_unknown" not in run.flags and run.active_energy_j == pytest.approx(
        run.energy_j - 30.0 * run.duration_s, rel=1e-3)  # fmt: skip


@pytest.mark.parametrize("ahead_ns", [5 * S, 2 * 86400 * S])
def test_a_reading_stamped_ahead_neither_starts_the_replay_early_nor_makes_it_late(
    db_url, ahead_ns
):
    """One early reading of the stream stamped ahead (a clock that jumped and came back, a
    hostile daemon), which the live join set aside (Joiner._not_ahead, against its clock then).
    At 5 s past the run's end it started the replay from itself, replaying everything after
    it; 2 days ahead it moved the horizon so that no open marker was restored (8 intervals
    missing, 22 without energy). Replayed after it, every later reading came behind it, late."""
    ms, spans, end, dev = a_run()
    items = stream([dev], ms, end + 20 * S)
    crash = spans[9][0] + 100 * MS
    stray = next(x for _, x in items if not isinstance(x, MarkerRec) and x.time_ns > T0 + S // 2)
    live = Pipeline([dev])  # the live join set the stray aside: as if it had not come
    live.feed(items)
    ahead = dataclasses.replace(stray, time_ns=end + ahead_ns)
    got, done = crash_and_restart(db_url, [dev], items, crash, stored_instead=[ahead])
    same(got, live.out)
    # the replay starts where the stream crossed T0 + 2 s (13 s before the run), not at the
    # stray's seq (T0 + 0.5 s)
    after_1s = sum(
        1 for real, x in items if T0 + S <= real <= crash and not isinstance(x, MarkerRec)
    )
    assert done.readings < after_1s
