"""What the report's tables say beyond the means: which baseline a series' ratios use and why,
which runs the statistics leave out, means over fewer runs than the point has, and the Pareto
front of each model and hardware (terminal, HTML, CSV and the time-vs-energy figure)."""

from __future__ import annotations

import html

import pytest

from collector.report import plots as P
from collector.report.analysis import analyze
from collector.report.build import html_page
from collector.report.tables import csv_tables, terminal_summary
from tests.sweep.study_records import make_run


def table(a, name):
    head, rows = csv_tables(a, {})[name]
    return [dict(zip(head, r, strict=True)) for r in rows]


def outputs(a, n_runs):
    """The terminal summary (compact and wide) and the HTML page's text."""
    page = html.unescape(html_page("s", a, [], n_runs))
    return [terminal_summary(a), terminal_summary(a, wide=True), page]


def f8_runs():
    """The reviewer's series f8: f1 has only a failed run, f2 and f4 two completed each."""
    return [
        make_run("f1.r0", gpus=1, point="f1", series="f8", status="failed"),
        make_run("f2.r0", gpus=2, point="f2", series="f8", duration_s=30, energy_kwh=1.0),
        make_run("f2.r1", gpus=2, point="f2", series="f8", duration_s=34, energy_kwh=1.2),
        make_run("f4.r0", gpus=4, point="f4", series="f8", duration_s=20, energy_kwh=1.4),
        make_run("f4.r1", gpus=4, point="f4", series="f8", duration_s=23, energy_kwh=1.6),
    ]


def test_a_baseline_other_than_the_smallest_gpu_count_is_named_with_the_reason():
    a = analyze(f8_runs())
    note = "series f8: ratios to f2 (2 GPUs); f1 (1 GPU) has no completed run"
    for text in outputs(a, 5):
        assert note in text
    rows = {(r["point"], r["metric"]): r for r in table(a, "series.csv")}
    assert (rows[("f4", "speedup")]["baseline_point"], rows[("f4", "speedup")]["gpus"]) == (
        "f2",
        4,
    )
    assert rows[("f4", "speedup")]["value"] == pytest.approx(32 / 21.5)
    assert not any(point == "f1" for point, _ in rows)  # no ratio without a completed run
    plain = analyze(f8_runs()[1:])  # f2 is the smallest GPU count: nothing to explain
    assert all("series f8:" not in text for text in outputs(plain, 4))
    failed = analyze([r for r in f8_runs() if r.run_id.startswith("f1")])
    for text in outputs(failed, 1):
        assert "series f8: no ratios; none of its points has a completed run" in text


def test_runs_left_out_of_the_statistics_are_named_in_every_output():
    runs = [
        make_run("ok0", gpus=1, point="g1"),
        make_run("ok1", gpus=4, point="g4", flags=frozenset({"gap"})),
        make_run("bad", gpus=4, point="g4", status="failed", flags=frozenset({"incomplete"})),
        make_run("lost", gpus=8, point="g8", status="interrupted", duration_s=60),
    ]
    a = analyze(runs)
    for text in outputs(a, 4):
        lines = text.splitlines()
        assert any("bad" in x and "g4" in x and "failed" in x for x in lines), text
        assert any("lost" in x and "g8" in x and "interrupted" in x for x in lines), text
    status = {r["run_id"]: r["status"] for r in table(a, "runs.csv")}
    assert status == {
        "ok0": "completed",
        "ok1": "completed",
        "bad": "failed",
        "lost": "interrupted",
    }
    lost = {r["metric"]: r["value"] for r in table(a, "runs.csv") if r["run_id"] == "lost"}
    assert lost["runtime_s"] == 60  # what is known of a run not completed
    g8 = [r for r in table(a, "points.csv") if r["point"] == "g8"]
    assert [(r["runs"], r["not_completed"], r["n"]) for r in g8] == [(0, 1, 0)]
    flags = {(r["run_id"], r["flag"]) for r in table(a, "flags.csv")}
    assert flags == {("ok1", "gap"), ("bad", "incomplete")}


def test_the_list_of_runs_left_out_is_bounded():
    runs = [make_run("ok", point="p")]
    runs += [make_run(f"bad{i:02d}", point="p", status="failed") for i in range(25)]
    for text in outputs(analyze(runs), 26):
        assert "bad19" in text and "bad20" not in text
        assert "and 5 more: runs.csv" in text
    assert len({r["run_id"] for r in table(analyze(runs), "runs.csv")}) == 26


def thin_point():
    """Three completed runs of p: one without active energy (idle_unknown), one without an
    accuracy; q has all of its one run's metrics."""
    return analyze(
        [
            make_run("p0", point="p", active_kwh=0.5, final={"top1_error": 30.0}),
            make_run("p1", point="p", active_kwh=0.7, final={"top1_error": 32.0}),
            make_run("p2", point="p", active_kwh=None),
            make_run("q0", point="q", active_kwh=0.5, final={"top1_error": 30.0}),
        ]
    )


def points_line(text, point):
    return next(x for x in text.splitlines() if x.startswith(f"{point} "))


def test_a_mean_over_fewer_runs_than_the_point_has_says_so():
    a = thin_point()
    compact, wide, page = outputs(a, 4)
    assert "31 ± 1.4 (n=2)" in points_line(compact, "p")  # top-1 error: one run has none
    assert "(n=" not in points_line(compact, "q")
    line = points_line(wide, "p")
    assert "0.6 ± 0.14 (n=2)" in line and "31 ± 1.4 (n=2)" in line
    assert line.count("(n=") == 2  # energy, runtime, ... are over all three runs
    assert "<td>0.6 ± 0.14 (n=2)</td>" in page and "<td>31 ± 1.4 (n=2)</td>" in page
    for text in (compact, wide, page):
        assert "(n=k): mean over k of the point's completed runs" in " ".join(text.split())


def test_compact_points_table_still_fits_with_the_n_suffix():
    runs = [
        make_run(f"r{g}{i}", gpus=g, point=f"g{g}", active_kwh=0.5 if i else None,
                 final={"rmse": 0.5, "acc": 0.8} if i else {}, energy_kwh=0.0123456 * (1 + i))
        for g in (1, 2, 4)
        for i in range(3)
    ]  # fmt: skip
    compact = terminal_summary(analyze(runs))
    assert max(map(len, compact.splitlines())) <= 100
    assert "RMSE σ" in compact and "(n=2)" in points_line(compact, "g1")


def test_pareto_front_per_model_and_hardware_in_terminal_html_and_figure():
    runs = [
        make_run("f", point="f", model="fourcastnet", duration_s=5, energy_kwh=1),
        make_run("A", point="A", duration_s=10, energy_kwh=5),
        make_run("B", point="B", duration_s=20, energy_kwh=3),
        make_run("C", point="C", duration_s=15, energy_kwh=6),
    ]
    a = analyze(runs)
    for text in outputs(a, 4):
        assert "fourcastnet on NVIDIA H100: f" in text
        assert "resnet50 on NVIDIA H100: A, B" in text
    fig = P.new_figure()
    ax = fig.add_subplot()
    P.time_vs_energy(ax, P.Ctx.of(a, {}))
    fronts = {
        line.get_label(): list(line.get_xdata())
        for line in ax.lines
        if line.get_label().startswith("Pareto front")
    }
    assert fronts == {
        "Pareto front, fourcastnet on NVIDIA H100": [5.0],
        "Pareto front, resnet50 on NVIDIA H100": [10.0, 20.0],
    }
