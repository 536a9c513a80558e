"""Short steps: the job's mean energy per step over an epoch, with a confidence interval that
holds the truth and is far narrower than one step's own uncertainty; in `collector show`."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from collector.cli import main
from collector.energy.steps import epoch_step_stats, t975
from collector.energy.timeline import CounterSpec, DeviceTimeline
from collector.store import queries
from tests.collector.collector_energy_sim import make_load, readings, to_ns, to_s
from tests.collector.store.test_collector_queries import engine  # noqa: F401 - the fixture


@pytest.mark.parametrize(("coverage", "spec"), [(1.0, CounterSpec()),
                                                 (0.25, CounterSpec(coverage_fraction=0.25))])  # fmt: skip
def test_mean_of_50_ms_steps_holds_the_truth(coverage, spec):
    workload = make_load("random", seed=3, duration_s=70.0)
    tl = DeviceTimeline(spec)
    tl.extend(readings(workload.truth, seed=4, coverage=coverage))
    rows, truths = [], []
    for epoch, (a, b) in enumerate(workload.epochs):
        t = to_s(a)
        while t + 0.05 <= to_s(b):
            s, e = to_ns(t), to_ns(t + 0.05)
            iv = tl.interval(s, e)
            rows.append(SimpleNamespace(epoch=epoch, energy_j=iv.energy_j,
                                        uncertainty_j=iv.uncertainty_j, duration_s=0.05))  # fmt: skip
            truths.append((epoch, workload.truth.energy(s, e)))
            t += 0.05
    stats = epoch_step_stats(rows)
    assert len(stats) == len(workload.epochs)
    for st in stats:
        true_mean = sum(j for ep, j in truths if ep == st.epoch) / st.steps
        assert st.steps >= 390
        assert abs(st.mean_energy_j - true_mean) <= st.measurement_j  # the measured mean
        # measured far better than one step alone (the spread is the random load itself)
        assert st.measurement_j < st.mean_energy_j * st.single_step_pct / 100 / 5
        assert st.ci95_j >= st.spread_j


def test_student_t_for_few_steps():
    assert t975(1) == pytest.approx(12.706) and t975(30) == pytest.approx(2.042)
    assert t975(1000) == 1.96


def test_step_stats_from_the_database(engine):  # noqa: F811
    stats = queries.step_stats(engine, "r1")
    assert [s.epoch for s in stats] == [0, 1]
    first = stats[0]
    # job steps (both ranks summed): 601, 603, 605 J, each +- 1.0 J (0.5 J per rank)
    assert first.steps == 3 and first.mean_energy_j == pytest.approx(603.0)
    assert first.measurement_j == pytest.approx(math.sqrt(3.0) / 3)
    assert first.spread_j == pytest.approx(4.303 * 2.0 / math.sqrt(3))
    assert first.ci95_j == pytest.approx(math.hypot(first.measurement_j, first.spread_j))
    assert first.mean_duration_s == pytest.approx(1.0)


def test_collector_show_prints_the_mean_step_energy(engine, db_url):  # noqa: F811
    runner = CliRunner()
    out = runner.invoke(main, ["show", "r1", "--db", db_url])
    assert out.exit_code == 0, out.output
    assert "mean energy per step (job, all ranks)" in out.output and "603.00" in out.output
    data = json.loads(
        runner.invoke(main, ["show", "r1", "--db", db_url, "--format", "json"]).output
    )
    assert [s["steps"] for s in data["step_energy"]] == [3, 3]
