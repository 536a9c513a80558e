"""`collector steps`: per-rank and job-wide step energy as a table, JSON and tidy CSV (known rows,
SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from collector.cli import main
from collector.store import queries
from tests.collector.store.test_collector_queries import engine  # noqa: F401 (the known rows)


def steps(db_url: str, *args: str) -> str:
    res = CliRunner().invoke(main, ["steps", "r1", "--db", db_url, *args])
    assert res.exit_code == 0, res.output
    return res.output


def test_rank_steps_query(engine):  # noqa: F811
    rows = queries.rank_steps(engine, "r1")
    assert [(r.rank, r.step) for r in rows] == [(r, s) for s in range(6) for r in (0, 1)]
    assert rows[3].energy_j == 302.0 and rows[3].device_uuid == "gpu-1"
    assert [r.step for r in queries.rank_steps(engine, "r1", rank=1)] == list(range(6))
    job = queries.job_steps(engine, "r1")
    assert job[0].coverage == 1.0 and job[0].active_energy_j is None  # steps carry no active


def test_csv_is_long_and_tidy(engine, db_url):  # noqa: F811
    rows = list(csv.DictReader(io.StringIO(steps(db_url, "--format", "csv"))))
    assert len(rows) == 12 and [(r["rank"], r["step"]) for r in rows[:3]] == [
        ("0", "0"), ("1", "0"), ("0", "1")]  # fmt: skip
    assert set(rows[0]) == {"run_id", "rank", "step", "epoch", "start_ns", "end_ns",
                            "duration_s", "energy_j", "active_energy_j", "uncertainty_j",
                            "coverage", "flags", "device_uuid"}  # fmt: skip
    assert float(rows[3]["energy_j"]) == 302.0 and rows[3]["flags"] == ""
    assert float(rows[3]["duration_s"]) == 1.0 and float(rows[3]["uncertainty_j"]) == 0.5
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(io.StringIO(steps(db_url, "--format", "csv")))
    assert frame.groupby("step")["energy_j"].sum().tolist() == [601.0 + 2 * k for k in range(6)]


def test_job_wide_and_one_rank(engine, db_url):  # noqa: F811
    job = json.loads(steps(db_url, "--job", "--format", "json"))
    assert [r["energy_j"] for r in job] == [601.0 + 2 * k for k in range(6)]
    assert job[4]["ranks"] == 2 and job[4]["epoch"] == 1 and job[4]["uncertainty_j"] == 1.0
    one = list(csv.DictReader(io.StringIO(steps(db_url, "--rank", "1", "--format", "csv"))))
    assert [r["rank"] for r in one] == ["1"] * 6
    table = steps(db_url, "--job").splitlines()
    assert table[0].split()[:3] == ["ranks", "step", "epoch"] and table[2 + 6] == ""
    assert table[2 + 7].startswith("mean energy per step (job, all ranks)")


def test_epoch_means_of_short_steps(engine, db_url):  # noqa: F811
    """The job's mean energy per step per epoch with its 95 % confidence interval, in every
    format: job steps 601, 603, 605 J (epoch 0) and 607, 609, 611 J (epoch 1), each +- 1 J."""
    table = steps(db_url).splitlines()
    at = table.index("mean energy per step (job, all ranks), 95 % confidence interval:")
    assert table[at + 1].split()[:2] == ["epoch", "steps"]
    first, second = (line.split() for line in table[at + 3 : at + 5])
    assert first[:4] == ["0", "3", "1.000", "603.00"] and second[:4] == [
        "1",
        "3",
        "1.000",
        "609.00",
    ]
    expected = queries.step_stats(engine, "r1")
    assert first[4] == f"{expected[0].ci95_j:,.2f}"
    data = json.loads(steps(db_url, "--epoch-means", "--format", "json"))
    assert [(r["run_id"], r["epoch"], r["steps"]) for r in data] == [("r1", 0, 3), ("r1", 1, 3)]
    assert data[1]["mean_energy_j"] == pytest.approx(609.0)
    assert data[0]["ci95_j"] == pytest.approx(expected[0].ci95_j)
    assert data[0]["measurement_j"] == pytest.approx(expected[0].measurement_j)
    rows = list(csv.DictReader(io.StringIO(steps(db_url, "--epoch-means", "--format", "csv"))))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert set(rows[0]) == {"run_id", "epoch", "steps", "mean_energy_j", "ci95_j",
                            "measurement_j", "spread_j", "mean_duration_s", "single_step_pct"}  # fmt: skip
    assert float(rows[0]["ci95_j"]) == pytest.approx(expected[0].ci95_j)
    only = steps(db_url, "--epoch-means").splitlines()
    assert only[0].startswith("mean energy per step") and len(only) == 2 + 2 + 1
    # the per-step formats stay one row per step
    assert len(json.loads(steps(db_url, "--job", "--format", "json"))) == 6


def test_bad_input_is_one_line(engine, db_url):  # noqa: F811
    res = CliRunner().invoke(main, ["steps", "nope", "--db", db_url])
    assert res.exit_code == 1 and res.output.strip() == "error: no run 'nope' in the database"
    res = CliRunner().invoke(main, ["steps", "r1", "--db", db_url, "--job", "--rank", "0"])
    assert res.exit_code == 1 and "not with --rank" in res.output
    res = CliRunner().invoke(main, ["steps", "r1", "--db", db_url, "--epoch-means", "--rank", "0"])
    assert res.exit_code == 1 and "not with --rank" in res.output
