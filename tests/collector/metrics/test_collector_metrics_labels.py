"""Prometheus labels stay bounded: a run's series go away a grace period after it ends (and
come back if the run is resumed under the same id); never step or epoch labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from collector.join.joiner import Joiner
from collector.metrics.exporter import ParawattCollector
from collector.metrics.state import LiveState
from collector.pipeline import Pipeline
from collector.store.aggregate import SecondAggregator
from collector.store.writebatch import WriteBatch
from tests.collector.join.test_collector_join import CFG
from tests.collector.join.test_collector_join_sessions import device, feed, session
from tests.collector.synth import T0, S, marker, node

GRACE_S = 300.0


def exposition(live: LiveState) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ParawattCollector(live))
    return generate_latest(registry).decode()


def run_series(text: str) -> list[str]:
    return [line for line in text.splitlines() if 'run_id="r1"' in line]


def test_run_series_expire_after_the_grace_period_and_return_on_resume():
    ms1, spans1, (s1, e1) = session(T0 + 12 * S, [0])
    dev = device([(spans1, (s1, e1))])
    j = Joiner(CFG)
    j.add_node(node("n1", [dev]))
    live = LiveState()
    pipe = Pipeline(j, SecondAggregator({}), live, writer=None, run_grace_s=GRACE_S)
    for out in feed(j, dev.readings(T0, e1 + 5 * S), ms1):
        pipe.apply(out, WriteBatch())
    now = e1 + 10 * S  # collector clock when it notices the run is over
    pipe._update_runs(now)
    text = exposition(live)
    assert 'parawatt_run_active{model="",nodes="",run_id="r1",sweep=""} 0.0' in text
    assert (
        'parawatt_step_duration_seconds_count{model="",nodes="",run_id="r1",sweep=""} 4.0' in text
    )
    assert "step=" not in text and "epoch=" not in text
    pipe._update_runs(now + int((GRACE_S - 1) * 1e9))
    assert run_series(exposition(live))
    pipe._update_runs(now + int((GRACE_S + 1) * 1e9))
    assert not run_series(exposition(live)) and not j.progress()

    j.add_markers("n1", [marker("step_end", e1 + S, step=99)])  # a straggler: stays gone
    pipe._update_runs(now + int((GRACE_S + 2) * 1e9))
    assert not run_series(exposition(live))

    s2 = e1 + 400 * S  # resumed from its checkpoint, same run id
    j.add_markers("n1", [marker("run_start", s2), marker("epoch_start", s2 + S, epoch=1)])
    pipe._update_runs(now + int((GRACE_S + 3) * 1e9))
    assert 'parawatt_run_active{model="",nodes="",run_id="r1",sweep=""} 1.0' in exposition(live)
