"""The study report's files: they exist, the HTML is self-contained, the numbers match the input."""

from __future__ import annotations

import base64
import csv
import re

import pytest

from collector.report import build_report
from tests.sweep.study_records import make_run


def records():
    runs = []
    for rep, jitter in enumerate([0.9, 1.1]):
        for gpus in (1, 2, 4):
            runs.append(
                make_run(
                    f"g{gpus}r{rep}",
                    gpus=gpus,
                    lbs=8 // gpus if gpus < 8 else 1,
                    gbs=8,
                    duration_s=100.0 / gpus**0.8 * jitter,
                    energy_kwh=0.01 * gpus**0.2 * jitter,
                    samples=800,
                    steps=100,
                    point=f"g{gpus}",
                    series="gbs8",
                    repeat=rep,
                    final={"top1_error": 50.0 + gpus + rep},
                    flags=frozenset({"incomplete"}) if (gpus, rep) == (4, 1) else frozenset(),
                )
            )
    runs.append(make_run("broken", gpus=4, lbs=2, gbs=8, point="g4", status="failed"))
    return runs


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    steps = {"g1r0": [10.0, 12.0], "g2r1": [5.0, 6.0, 7.0]}
    return build_report("study", records(), steps, out), out


def read_csv(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_all_files_exist(report):
    result, out = report
    names = {p.name for p in result.files}
    assert {
        "points.csv",
        "series.csv",
        "fits.csv",
        "runs.csv",
        "step_energy.csv",
        "report.html",
    } <= names
    pngs = [p for p in result.files if p.suffix == ".png"]
    assert len(pngs) == 6
    for p in result.files:
        assert p.exists() and p.stat().st_size > 0
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_points_csv_agrees_with_the_records(report):
    _, out = report
    rows = {r["point"]: r for r in read_csv(out / "points.csv")}
    g2 = rows["g2"]
    energies = [0.01 * 2**0.2 * j for j in (0.9, 1.1)]
    mean = sum(energies) / 2
    assert float(g2["energy_kwh_mean"]) == pytest.approx(mean)
    assert float(g2["energy_kwh_std"]) == pytest.approx(abs(energies[0] - mean))
    runtimes = [100.0 / 2**0.8 * j for j in (0.9, 1.1)]
    assert float(g2["runtime_s_mean"]) == pytest.approx(sum(runtimes) / 2)
    assert float(g2["gpu_hours_mean"]) == pytest.approx(sum(runtimes) / 2 * 2 / 3600)
    assert float(g2["j_per_sample_mean"]) == pytest.approx(mean * 3.6e6 / 800)
    assert float(g2["top1_error_mean"]) == pytest.approx(52.5)
    assert (g2["gpus"], g2["lbs"], g2["gbs"], g2["runs"]) == ("2", "4", "8", "2")
    assert rows["g4"]["not_completed"] == "1"
    assert (rows["g4"]["flags"], rows["g2"]["flags"]) == ("incomplete", "")  # not hidden


def test_series_csv_speedup_and_ratios(report):
    _, out = report
    rows = {r["point"]: r for r in read_csv(out / "series.csv")}
    # jitter cancels in the means: speed-up = 4^0.8, efficiency = 4^0.8 / 4
    assert float(rows["g4"]["speedup"]) == pytest.approx(4**0.8)
    assert float(rows["g4"]["parallel_efficiency"]) == pytest.approx(4**0.8 / 4)
    assert float(rows["g4"]["energy_kwh_ratio"]) == pytest.approx(4**0.2)
    assert rows["g4"]["baseline_point"] == "g1"
    assert float(rows["g1"]["speedup"]) == pytest.approx(1.0)


def test_fits_csv_matches_a_direct_fit(report):
    _, out = report
    import numpy as np

    done = [r for r in records() if r.status == "completed"]
    x = np.array([r.gpu_hours for r in done])
    y = np.array([r.energy_j / 3.6e6 for r in done])
    slope, intercept = np.polyfit(x, y, 1)
    r2 = np.corrcoef(x, y)[0, 1] ** 2
    (row,) = read_csv(out / "fits.csv")
    assert (row["model"], row["hardware"], row["runs"]) == ("resnet50", "NVIDIA H100", "6")
    assert float(row["slope_kwh_per_gpu_hour"]) == pytest.approx(slope)
    assert float(row["intercept_kwh"]) == pytest.approx(intercept)
    assert float(row["r2"]) == pytest.approx(r2)


def test_runs_and_step_energy_csv(report):
    _, out = report
    runs = read_csv(out / "runs.csv")
    assert len(runs) == 6 and {r["status"] for r in runs} == {"completed"}
    assert {r["run_id"] for r in runs if r["flags"]} == {"g4r1"}
    steps = {r["point"]: r for r in read_csv(out / "step_energy.csv")}
    assert steps["g1"]["steps"] == "2" and float(steps["g1"]["median_j"]) == pytest.approx(11.0)
    assert float(steps["g2"]["mean_j"]) == pytest.approx(6.0)
    assert "g4" not in steps


def test_html_is_self_contained_with_tables_and_plots(report):
    result, out = report
    page = (out / "report.html").read_text()
    assert "<table>" in page and "g4" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 6
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert not re.search(r'(src|href)="(http|/|\./)', page)  # nothing to fetch
    assert "g2" in result.table and "±" in result.table  # terminal table with mean ± std


def test_report_of_a_sweep_without_completed_runs_still_renders(tmp_path):
    runs = [make_run("a", status="failed"), make_run("b", status="running", energy_kwh=None)]
    result = build_report("empty", runs, {}, tmp_path)
    assert "0 (+2 not completed)" in result.table
    assert all(p.exists() for p in result.files)
    assert read_csv(tmp_path / "fits.csv") == []


def test_report_command_errors_are_one_clear_message(tmp_path):
    from click.testing import CliRunner

    from collector.db import create_db_engine, migrate
    from collector.report import report

    missing = tmp_path / "missing.db"
    args = ["--sweep", "s", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(report, [*args, "--db", f"sqlite:///{missing}"])
    assert result.exit_code == 1 and "no database file" in result.output
    assert "Traceback" not in result.output and not missing.exists()
    empty = tmp_path / "empty.db"
    engine = create_db_engine(f"sqlite:///{empty}")
    migrate(engine)
    engine.dispose()
    result = CliRunner().invoke(report, [*args, "--db", f"sqlite:///{empty}"])
    assert result.exit_code == 1 and "no runs tagged sweep=s" in result.output
    assert not (tmp_path / "out").exists()
