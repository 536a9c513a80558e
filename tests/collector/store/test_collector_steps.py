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
    assert table[0].split()[:3] == ["ranks", "step", "epoch"] and len(table) == 2 + 6


def test_bad_input_is_one_line(engine, db_url):  # noqa: F811
    res = CliRunner().invoke(main, ["steps", "nope", "--db", db_url])
    assert res.exit_code == 1 and res.output.strip() == "error: no run 'nope' in the database"
    res = CliRunner().invoke(main, ["steps", "r1", "--db", db_url, "--job", "--rank", "0"])
    assert res.exit_code == 1 and "not with --rank" in res.output
