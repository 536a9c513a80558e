"""The study report's files: they exist, the HTML is self-contained, the numbers match the input."""

from __future__ import annotations

import base64
import csv
import re
from dataclasses import replace

import pytest

from collector.report.build import build_report
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


FIGURES = {
    "Scaling study overview",
    "Energy vs GPUs",
    "Efficiency ratios vs GPUs",
    "Speed-up vs GPUs",
    "Parallel efficiency vs GPUs",
    "Accuracy vs GBS",
    "Energy vs GPU-hours",
    "Time vs energy",
    "Mean power per GPU vs LBS",
    "Step-energy distribution",
}
CSVS = {
    "points.csv",
    "series.csv",
    "fits.csv",
    "runs.csv",
    "flags.csv",
    "point_series.csv",
    "step_energy.csv",
}


def stem(title):
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def test_every_figure_as_png_and_pdf_named_after_its_title(report):
    result, out = report
    names = {p.name for p in result.files}
    assert CSVS | {"report.html"} <= names
    for title in FIGURES:
        png, pdf = out / f"{stem(title)}.png", out / f"{stem(title)}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", title
        assert pdf.read_bytes()[:5] == b"%PDF-", title
        assert png in result.files and pdf in result.files
    assert len([p for p in result.files if p.suffix == ".pdf"]) == len(FIGURES)
    assert all(p.exists() and p.stat().st_size > 0 for p in result.files)


def test_pdf_figures_are_vector_with_text_kept(report):
    # A rasterised figure would be an image XObject; the text is embedded TrueType (fonttype
    # 42), so it stays selectable and editable in the paper's PDF.
    _, out = report
    for title in FIGURES:
        pdf = (out / f"{stem(title)}.pdf").read_bytes()
        assert b"/Subtype /Image" not in pdf and b"/FontFile2" in pdf, title


def tidy(path):
    """Rows of a CSV file, checked tidy: one header, the same number of cells in every row, and
    every cell a scalar (no list joined with ';' or ',', no 'a ± b')."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    head, body = rows[0], rows[1:]
    assert len(set(head)) == len(head)
    for row in body:
        assert len(row) == len(head), path.name
        for cell in row:
            assert ";" not in cell and "±" not in cell and "," not in cell, (path.name, cell)
    return [dict(zip(head, r, strict=True)) for r in body]


def test_csv_files_are_tidy_long_format(report):
    _, out = report
    for name in CSVS:
        tidy(out / name)
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(out / "points.csv")
    assert {"point", "metric", "unit", "n", "mean", "std"} <= set(frame.columns)
    assert (frame["mean"].dtype.kind, frame["n"].dtype.kind, frame["gpus"].dtype.kind) == (
        "f",
        "i",
        "i",
    )
    energy = frame[(frame.point == "g2") & (frame.metric == "energy_kwh")]
    assert len(energy) == 1 and energy["unit"].item() == "kWh"  # one row per point and metric
    series = pd.read_csv(out / "series.csv")
    assert series["value"].dtype.kind == "f" and set(series["metric"]) >= {"speedup"}
    for name in CSVS:
        assert len(pd.read_csv(out / name).columns) > 1, name


def test_points_csv_agrees_with_the_records(report):
    _, out = report
    rows = {(r["point"], r["metric"]): r for r in tidy(out / "points.csv")}
    energies = [0.01 * 2**0.2 * j for j in (0.9, 1.1)]
    mean = sum(energies) / 2
    g2 = rows[("g2", "energy_kwh")]
    assert (g2["unit"], g2["n"]) == ("kWh", "2")
    assert float(g2["mean"]) == pytest.approx(mean)
    assert float(g2["std"]) == pytest.approx(abs(energies[0] - mean) * 2**0.5)  # sample std
    runtimes = [100.0 / 2**0.8 * j for j in (0.9, 1.1)]
    assert float(rows[("g2", "runtime_s")]["mean"]) == pytest.approx(sum(runtimes) / 2)
    gpu_h = rows[("g2", "gpu_hours")]["mean"]
    assert float(gpu_h) == pytest.approx(sum(runtimes) / 2 * 2 / 3600)
    per_sample = rows[("g2", "j_per_sample")]["mean"]
    assert float(per_sample) == pytest.approx(mean * 3.6e6 / 800)
    assert float(rows[("g2", "top1_error")]["mean"]) == pytest.approx(52.5)
    assert rows[("g2", "top1_error")]["unit"] == "%"
    assert (g2["gpus"], g2["lbs"], g2["gbs"], g2["runs"]) == ("2", "4", "8", "2")
    assert rows[("g4", "energy_kwh")]["not_completed"] == "1"
    flags = tidy(out / "flags.csv")
    assert [(f["run_id"], f["point"], f["flag"]) for f in flags] == [("g4r1", "g4", "incomplete")]
    members = tidy(out / "point_series.csv")
    assert {(m["point"], m["series"], m["scaling"]) for m in members} == {
        (g, "gbs8", "strong") for g in ("g1", "g2", "g4")
    }


def test_series_csv_speedup_and_ratios(report):
    _, out = report
    rows = {(r["point"], r["metric"]): r for r in tidy(out / "series.csv")}
    # jitter cancels in the means: speed-up = 4^0.8, efficiency = 4^0.8 / 4
    assert float(rows[("g4", "speedup")]["value"]) == pytest.approx(4**0.8)
    assert float(rows[("g4", "parallel_efficiency")]["value"]) == pytest.approx(4**0.8 / 4)
    assert float(rows[("g4", "energy_kwh_ratio")]["value"]) == pytest.approx(4**0.2)
    assert float(rows[("g4", "energy_kwh_ratio")]["std"]) > 0
    assert rows[("g4", "speedup")]["baseline_point"] == "g1"
    assert float(rows[("g1", "speedup")]["value"]) == pytest.approx(1.0)
    assert float(rows[("g1", "speedup")]["std"]) == 0.0


def test_fits_csv_matches_a_direct_fit_with_its_confidence_interval(report):
    _, out = report
    import numpy as np
    from scipy import stats

    done = [r for r in records() if r.status == "completed"]
    x = np.array([r.gpu_hours for r in done])
    y = np.array([r.energy_j / 3.6e6 for r in done])
    slope, intercept = np.polyfit(x, y, 1)
    r2 = np.corrcoef(x, y)[0, 1] ** 2
    resid = y - (slope * x + intercept)
    se = np.sqrt(np.sum(resid**2) / (len(x) - 2) / np.sum((x - x.mean()) ** 2))
    half = stats.t.ppf(0.975, len(x) - 2) * se
    rows = {(r["x"], r["y"]): r for r in tidy(out / "fits.csv")}
    row = rows[("gpu_hours", "energy_kwh")]
    assert (row["model"], row["hardware"], row["n"]) == ("resnet50", "NVIDIA H100", "6")
    assert float(row["slope"]) == pytest.approx(slope)
    assert float(row["intercept"]) == pytest.approx(intercept)
    assert float(row["r2"]) == pytest.approx(r2)
    assert float(row["slope_ci95_low"]) == pytest.approx(slope - half)
    assert float(row["slope_ci95_high"]) == pytest.approx(slope + half)


def test_runs_and_step_energy_csv(report):
    _, out = report
    runs = tidy(out / "runs.csv")
    completed = {f"g{g}r{r}" for g in (1, 2, 4) for r in (0, 1)}
    assert {r["run_id"] for r in runs} == completed | {"broken"}  # every run of the sweep
    assert {r["status"] for r in runs if r["run_id"] == "broken"} == {"failed"}
    energy = {r["run_id"]: r for r in runs if r["metric"] == "energy_kwh"}
    assert (
        float(energy["g1r0"]["value"]) == pytest.approx(0.009) and energy["g1r0"]["unit"] == "kWh"
    )
    steps = {r["point"]: r for r in tidy(out / "step_energy.csv")}
    assert steps["g1"]["steps"] == "2" and float(steps["g1"]["median_j"]) == pytest.approx(11.0)
    assert float(steps["g2"]["mean_j"]) == pytest.approx(6.0)
    assert "g4" not in steps


def test_html_is_self_contained_with_tables_and_figures(report):
    result, out = report
    page = (out / "report.html").read_text()
    assert "<table>" in page and "g4" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(FIGURES)
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert not re.search(r'(src|href)="(http|/|\./)', page)  # nothing to fetch
    assert "sample standard deviation" in page  # the error-bar convention is stated


def test_html_escapes_user_strings(tmp_path):
    runs = [make_run("x", point="<b>p</b>", hardware="<script>x</script>")]
    build_report("<i>s</i>", runs, {}, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "<script>x" not in page and "&lt;script&gt;" in page and "<i>s</i>" not in page


def test_terminal_summary_fits_100_columns_and_wide_shows_everything(tmp_path):
    runs = records() + [
        make_run(
            f"long{g}",
            gpus=g,
            point=f"a-rather-long-point-name-g{g}",
            series="a-long-series-name-for-width",
            hardware="NVIDIA H100 80GB HBM3 with a long marketing name",
            final={"top1_error": 40.0, "rmse": 0.5, "acc": 0.9},
        )
        for g in (1, 2)
    ]
    compact = build_report("w", runs, {}, tmp_path / "c").table
    assert max(map(len, compact.splitlines())) <= 100
    for header in ("speed-up", "parallel eff.", "energy kWh", "kWh/GPU-h", "95% CI"):
        assert header in compact
    wide = build_report("w", runs, {}, tmp_path / "w", wide=True).table
    assert max(map(len, wide.splitlines())) > 100
    for header in ("samples/GPU-h", "W/GPU", "J/sample ratio", "R² (updates)"):
        assert header in wide and header not in compact
    assert "g2" in compact and "±" in compact  # mean ± std


def test_report_of_a_sweep_without_completed_runs_still_renders(tmp_path):
    runs = [make_run("a", status="failed"), make_run("b", status="running", energy_kwh=None)]
    result = build_report("empty", runs, {}, tmp_path)
    assert "0 (+2 left out)" in result.table
    assert all(p.exists() for p in result.files)
    assert tidy(tmp_path / "fits.csv") == []


def test_report_command_errors_are_one_clear_message(tmp_path):
    from click.testing import CliRunner

    from collector.report.build import report
    from collector.store.db import create_db_engine, migrate

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


def test_a_batch_size_not_given_stays_off_the_log_axes(tmp_path, recwarn):
    """A run tracked without its batch sizes (0: not given) is in the tables, but a log-2 axis
    has no place for 0: matplotlib warned (non-positive xlim) and the axis went wrong."""
    nobatch = make_run("nobatch", gpus=2, lbs=4, point="nb", final={"top1_error": 30.0})
    runs = [*records(), replace(nobatch, global_batch_size=0, local_batch_size=0)]
    build_report("study", runs, {}, tmp_path)
    assert not [w for w in recwarn.list if "xlim" in str(w.message)]
    with (tmp_path / "points.csv").open() as fh:
        assert any(row["point"] == "nb" for row in csv.DictReader(fh))
