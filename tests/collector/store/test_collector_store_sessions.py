"""A resumed run in the database (SQLite and PostgreSQL): one run interval spanning its sessions,
the latest RUN_END kept, re-run steps replaced, replays change nothing, restart reads right."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from collector.join.joiner import Joiner
from collector.store import queries
from collector.store import reads as store_reads
from collector.store.intervals import merge_sessions
from collector.store.models import Interval, Marker, Run, RunRank
from collector.store.store import Store
from collector.store.writebatch import WriteBatch
from parawatt_proto.records import RunConfigRec
from tests.collector.join.test_collector_join import CFG
from tests.collector.join.test_collector_join_sessions import device, feed, session
from tests.collector.synth import T0, S, marker, node

CONFIG = RunConfigRec(world_size=1, model="resnet50", global_batch_size=8, local_batch_size=8,
                      device_name="x86_64", tags={"sweep": "s"})  # fmt: skip


@pytest.fixture(scope="module")
def joined():
    """Both sessions through the real join: (markers, outputs) of each, and the times."""
    ms1, spans1, (s1, e1) = session(T0 + 12 * S, [0, 1], stop_after=2, status="interrupted")
    ms2, spans2, (s2, e2) = session(e1 + 3 * S, [1])
    ms1[0] = marker("run_start", s1, config=CONFIG, metrics={"start_epoch": 0.0})
    ms2[0] = marker("run_start", s2, config=CONFIG, metrics={"start_epoch": 1.0})
    ms1[-1] = marker("run_end", e1, status="interrupted", metrics={"loss": 2.0})
    ms2[-1] = marker("run_end", e2, status="completed", metrics={"loss": 1.0})
    dev = device([(spans1, (s1, e1)), (spans2, (s2, e2))])
    j = Joiner(CFG)
    j.add_node(node("n1", [dev], boot_id="b1"))
    outs = feed(j, dev.readings(T0, e2 + 5 * S), ms1 + ms2)
    n = node("n1", [dev], boot_id="b1")
    batches = []
    for ms, lo, hi in ((ms1, 0, s2), (ms2, s2, e2 + 1)):
        b = WriteBatch()
        b.nodes["b1"] = n
        b.markers = [("b1", m) for m in ms]
        b.intervals = [i for o in outs for i in o.intervals if lo <= i.start_ns < hi]
        b.rank_updates = [u for o in outs for u in o.rank_updates if lo <= u.start_ns < hi]
        batches.append(b)
    return batches, (s1, e1), (s2, e2)


def snapshot(engine):
    with engine.connect() as conn:
        return {m: sorted(tuple(r) for r in conn.execute(select(m).order_by(*m.__table__.c)))
                for m in (Interval, Marker, Run, RunRank)}  # fmt: skip


def test_resumed_run_is_one_run_spanning_its_sessions(engine, joined):
    (b1, b2), (s1, e1), (s2, e2) = joined
    store = Store(engine)
    store.write(b1)
    store.write(b2)
    with engine.connect() as conn:
        (run_iv,) = conn.execute(select(Interval).where(Interval.kind == "run")).all()
        steps = conn.execute(select(Interval.step, Interval.start_ns)
                             .where(Interval.kind == "step").order_by(Interval.step)).all()  # fmt: skip
        run = conn.execute(select(Run)).one()
        rank = conn.execute(select(RunRank)).one()
        run_end = conn.execute(select(Marker).where(Marker.kind == "run_end")).one()
    sessions = [i for i in b1.intervals + b2.intervals if i.kind == "run"]
    assert (run_iv.start_ns, run_iv.end_ns) == (s1, e2) and run_iv.flags == "resumed"
    assert run_iv.duration_s == pytest.approx((e1 - s1 + e2 - s2) / 1e9)
    assert run_iv.energy_j == pytest.approx(sum(i.energy_j for i in sessions))
    assert run_iv.active_energy_j == pytest.approx(sum(i.active_energy_j for i in sessions))
    assert [s for s, _ in steps] == list(range(8))  # no duplicate
    assert all(t > s2 for s, t in steps if s >= 4)  # re-run steps: the later occurrence
    assert (run.status, run.start_ns, run.end_ns, run.metrics) == ("completed", s1, e2,
                                                                  {"loss": 1.0})  # fmt: skip
    assert (rank.status, rank.start_ns, rank.end_ns) == ("completed", s2, e2)
    assert (run_end.time_ns, run_end.status) == (e2, "completed")

    r = queries.run_summary(engine, "r1")
    assert r.duration_s == pytest.approx((e1 - s1 + e2 - s2) / 1e9)  # not the pause
    assert (r.steps, r.epochs, r.status, r.flags) == (8, 2, "completed", {"resumed"})
    assert r.energy_j == pytest.approx(run_iv.energy_j)
    assert [e.epoch for e in queries.epoch_summaries(engine, "r1")] == [0, 1]


def test_replays_of_either_session_change_nothing(engine, joined):
    (b1, b2), *_ = joined
    store = Store(engine)
    store.write(b1)
    store.write(b2)
    before = snapshot(engine)
    store.write(b1)  # e.g. a restarted collector computing session 1 again
    store.write(b2)
    assert snapshot(engine) == before


def test_while_the_second_session_runs(engine, joined):
    (b1, b2), (s1, e1), (s2, e2) = joined
    store = Store(engine)
    store.write(b1)
    started = WriteBatch(nodes=b2.nodes, markers=b2.markers[:4])  # RUN_START .. first step
    store.write(started)
    r = queries.run_summary(engine, "r1")
    last = b2.markers[3][1].time_ns
    assert r.status == "running" and r.end_ns is None and "partial" in r.flags
    assert r.duration_s == pytest.approx((e1 - s1 + last - s2) / 1e9)
    opened = store_reads.open_markers(engine, 0)  # what a restart would join again
    assert [(boot, m.time_ns) for boot, m in opened] == [(b, m.time_ns) for b, m in b2.markers[:4]]
    store.write(b1)  # a late replay of session 1's end must not end the new session
    assert queries.run_summary(engine, "r1").status == "running"


def test_merge_sessions_adds_energies_and_time_run():
    a = dict(start_ns=0, end_ns=10, duration_s=10.0, energy_j=1000.0, active_energy_j=400.0,
             source="counter", power_integral_j=990.0, uncertainty_j=2.0, avg_power_w=100.0,
             max_power_w=300.0, coverage=1.0, flags="")  # fmt: skip
    b = dict(a, start_ns=100, end_ns=105, duration_s=5.0, energy_j=1500.0, active_energy_j=None,
             source="power", max_power_w=350.0, coverage=0.5, flags="gap")  # fmt: skip
    m = merge_sessions(a, b)
    assert (m["start_ns"], m["end_ns"], m["duration_s"], m["energy_j"]) == (0, 105, 15.0, 2500.0)
    assert m["active_energy_j"] is None and m["uncertainty_j"] == 4.0
    assert m["avg_power_w"] == pytest.approx(2500 / 15) and m["max_power_w"] == 350.0
    assert m["coverage"] == pytest.approx(12.5 / 15) and m["source"] == "mixed"
    assert m["flags"] == "gap,resumed"


def test_both_sessions_in_one_batch(engine, joined):
    """What the writer holds after a database outage: PostgreSQL refuses one statement that
    updates a row twice, so the same identity twice in a batch must not reach it as such."""
    (b1, b2), *_ = joined
    Store(engine).write(b1)
    Store(engine).write(b2)
    want = snapshot(engine)
    with engine.begin() as conn:
        for model in (Interval, Marker, RunRank, Run):
            conn.execute(model.__table__.delete())
    both = WriteBatch()
    both.extend(b1)
    both.extend(b2)
    Store(engine).write(both)
    got = snapshot(engine)
    assert {m: len(v) for m, v in got.items()} == {m: len(v) for m, v in want.items()}
    assert got[Run] == want[Run] and got[RunRank] == want[RunRank]
    strip = lambda rows: sorted(r[1:] for r in rows)  # noqa: E731 - ids differ
    assert strip(got[Interval]) == strip(want[Interval]) and strip(got[Marker]) == strip(
        want[Marker]
    )
