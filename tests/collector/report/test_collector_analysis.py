"""The scaling study's analysis on synthetic records with answers worked out by hand."""

from __future__ import annotations

import pytest

from collector.report.analysis import (
    accuracy_keys,
    analyze,
    distribution,
    linear_fit,
    pareto_front,
    run_metrics,
    stat,
    step_energy_by_point,
)
from tests.sweep.study_records import make_run

approx = pytest.approx


def test_stat_is_mean_and_sample_std_over_repeats():
    s = stat([1.0, 3.0, None])
    assert (s.mean, s.std, s.n) == (2.0, approx(2**0.5), 2)  # ddof=1: n - 1 in the denominator
    assert stat([None]).mean is None and stat([]).n == 0
    assert (stat([5.0]).mean, stat([5.0]).std) == (5.0, None)  # one run: no spread to quote


def test_run_metrics_units():
    run = make_run(
        "r",
        gpus=2,
        nodes=1,
        duration_s=3600,
        energy_kwh=1.0,
        gpu_energy_kwh=0.72,
        active_kwh=0.5,
        samples=7200,
        steps=100,
        final={"top1_error": 40.0},
        start_temps={"GPU-a": 40.0, "GPU-b": 44.0},
    )
    m = run_metrics(run)
    assert m["start_temperature_c"] == approx(42.0)
    assert m["energy_kwh"] == approx(1.0)
    assert m["active_energy_kwh"] == approx(0.5)
    assert m["gpu_hours"] == approx(2.0)
    assert m["kwh_per_gpu_hour"] == approx(0.5)
    assert m["samples_per_gpu_hour"] == approx(3600.0)
    assert m["updates_per_gpu_hour"] == approx(50.0)
    assert m["j_per_sample"] == approx(3.6e6 / 7200)
    assert m["power_per_gpu_w"] == approx(0.72 * 3.6e6 / 3600 / 2)  # 360 W
    assert m["energy_per_node_kwh"] == approx(1.0)
    assert m["top1_error"] == 40.0


def test_run_without_energy_keeps_time_metrics():
    m = run_metrics(make_run("r", energy_kwh=None))
    assert m["energy_kwh"] is None and m["kwh_per_gpu_hour"] is None and m["j_per_sample"] is None
    assert m["start_temperature_c"] is None
    assert m["gpu_hours"] == approx(1.0)


def test_a_run_whose_node_energy_is_unknown_has_no_energy_metrics():
    """GPU energy known, node energy not (a CPU or DRAM interval without energy): the node
    metrics stay unknown rather than GPU-only, and the run drops out of the energy statistics
    and fits; GPU power is still the GPUs'."""
    run = make_run("r", gpus=2, energy_kwh=None, gpu_energy_kwh=0.72)
    m = run_metrics(run)
    assert m["energy_kwh"] is None and m["energy_per_node_kwh"] is None
    assert m["kwh_per_gpu_hour"] is None and m["j_per_sample"] is None
    assert m["gpu_energy_kwh"] == approx(0.72) and m["power_per_gpu_w"] == approx(360.0)
    a = analyze([run, make_run("s", gpus=2, energy_kwh=1.0, repeat=1)])
    (point,) = a.points
    assert point.metrics["energy_kwh"].n == 1 and point.metrics["energy_kwh"].mean == 1.0


def test_linear_fit_known_answer():
    fit = linear_fit([1, 2, 3, 4], [1, 3, 2, 4])
    # sxy = 4, sxx = 5, syy = 5: slope 0.8, intercept 2.5 - 0.8 * 2.5, R² = 16 / 25.
    assert fit.slope == approx(0.8)
    assert fit.intercept == approx(0.5)
    assert fit.r2 == approx(0.64)
    assert fit.n == 4
    assert linear_fit([2, 2], [1, 3]) is None  # no spread in x
    assert linear_fit([1, 2], [3, 3]).r2 is None  # y constant: R² undefined


def test_energy_fit_per_model_and_hardware():
    runs = [
        make_run(f"a{i}", gpus=g, duration_s=3600, energy_kwh=0.4 * g + 0.1, point=f"g{g}")
        for i, g in enumerate([1, 2, 4, 8])
    ] + [
        make_run(f"b{i}", gpus=g, energy_kwh=0.3 * g, hardware="NVIDIA A100", point=f"a100-g{g}")
        for i, g in enumerate([1, 2])
    ]
    fits = {(f.model, f.hardware): f for f in analyze(runs).energy_fits}
    h100 = fits[("resnet50", "NVIDIA H100")]
    assert h100.fit.slope == approx(0.4)
    assert h100.fit.intercept == approx(0.1)
    assert h100.fit.r2 == approx(1.0)
    assert h100.fit.n == 4
    a100 = fits[("resnet50", "NVIDIA A100")]
    assert a100.fit.slope == approx(0.3) and a100.fit.intercept == approx(0.0, abs=1e-12)


def test_slope_relation_to_samples_and_updates_per_gpu_hour():
    # kWh/GPU-h = 0.2 + 1e-4 x samples/GPU-h exactly; updates = samples / 10.
    runs = []
    for i, spg in enumerate([1000.0, 2000.0, 4000.0]):
        runs.append(
            make_run(
                f"r{i}",
                gpus=1,
                duration_s=3600,
                samples=int(spg),
                steps=int(spg / 10),
                energy_kwh=0.2 + 1e-4 * spg,
                point=f"p{i}",
            )
        )
    (fit,) = analyze(runs).energy_fits
    assert fit.fit is None  # every run took 1 GPU-hour: no energy-vs-GPU-hours line
    assert fit.samples_per_gpu_hour == approx(7000 / 3)
    assert fit.updates_per_gpu_hour == approx(700 / 3)
    assert fit.vs_samples.slope == approx(1e-4) and fit.vs_samples.intercept == approx(0.2)
    assert fit.vs_samples.r2 == approx(1.0)
    assert fit.vs_updates.slope == approx(1e-3)


def test_repeats_mean_std_and_failed_runs_left_out():
    runs = [
        make_run("r0", point="p", energy_kwh=1.0, duration_s=100, repeat=0),
        make_run("r1", point="p", energy_kwh=3.0, duration_s=300, repeat=1),
        make_run("r2", point="p", energy_kwh=50.0, status="failed", repeat=2),
    ]
    (p,) = analyze(runs).points
    assert p.run_ids == ("r0", "r1")
    assert p.not_completed == 1
    e = p.metrics["energy_kwh"]
    assert (e.mean, e.std, e.n) == (approx(2.0), approx(2**0.5), 2)
    assert p.metrics["runtime_s"].mean == approx(200.0)
    assert p.metrics["runtime_s"].std == approx(100.0 * 2**0.5)


def _strong_series():
    # Same 1000 samples at 1, 2, 4 GPUs; listed out of order on purpose.
    return [
        make_run("g4", gpus=4, lbs=1, gbs=4, duration_s=40, energy_kwh=1.6, point="g4"),
        make_run("g1", gpus=1, lbs=4, gbs=4, duration_s=100, energy_kwh=1.0, point="g1"),
        make_run("g2", gpus=2, lbs=2, gbs=4, duration_s=60, energy_kwh=1.2, point="g2"),
    ]


def test_strong_scaling_speedup_efficiency_and_ratios():
    rows = {r.point_id: r for r in analyze(_strong_series()).series}
    assert {r.baseline_point for r in rows.values()} == {"g1"}
    assert rows["g1"].speedup == approx(1.0) and rows["g1"].parallel_efficiency == approx(1.0)
    assert rows["g2"].speedup == approx(100 / 60)
    assert rows["g2"].parallel_efficiency == approx(100 / 60 / 2)
    assert rows["g4"].speedup == approx(2.5)
    assert rows["g4"].parallel_efficiency == approx(0.625)
    assert rows["g4"].ratios["energy_kwh"] == approx(1.6)
    assert rows["g4"].ratios["runtime_s"] == approx(0.4)
    assert rows["g4"].ratios["gpu_hours"] == approx(1.6)  # 4 x 40 s vs 1 x 100 s
    assert rows["g2"].ratios["kwh_per_gpu_hour"] == approx(
        (1.2 / (120 / 3600)) / (1.0 / (100 / 3600))
    )


def test_speedup_agrees_with_the_runtime_ratio_when_repeats_scatter():
    """Strong scaling, equal samples: speed-up must be the inverse of the runtime ratio of the
    means. A ratio of mean per-run throughputs is not (mean of 1/T is not 1/mean T): a
    baseline whose repeats took 10 s and 190 s gave 0.94 speed-up against a 0.39 runtime
    ratio, a faster point reported as a slower one."""
    runs = [
        make_run("b1", gpus=1, samples=1000, duration_s=10, point="g1"),
        make_run("b2", gpus=1, samples=1000, duration_s=190, point="g1"),
        make_run("p1", gpus=2, samples=1000, duration_s=35, point="g2"),
        make_run("p2", gpus=2, samples=1000, duration_s=43, point="g2"),
    ]
    row = {r.point_id: r for r in analyze(runs).series}["g2"]
    assert row.ratios["runtime_s"] == approx(39 / 100)
    assert row.speedup == approx(100 / 39)  # pooled: samples over runtime, summed over repeats
    assert row.parallel_efficiency == approx(100 / 39 / 2)
    assert row.speedup_std is not None and row.speedup_std > 0


def test_weak_scaling_efficiency_is_time_ratio():
    runs = [
        make_run("w1", gpus=1, samples=1000, duration_s=100, point="w1", scaling="weak"),
        make_run("w2", gpus=2, samples=2000, duration_s=110, point="w2", scaling="weak"),
        make_run("w4", gpus=4, samples=4000, duration_s=125, point="w4", scaling="weak"),
    ]
    rows = {r.point_id: r for r in analyze(runs).series}
    assert rows["w2"].scaling == "weak"
    assert rows["w2"].speedup == approx((2000 / 110) / (1000 / 100))
    assert rows["w2"].parallel_efficiency == approx(100 / 110)
    assert rows["w4"].parallel_efficiency == approx(100 / 125)
    assert rows["w4"].ratios["samples"] == approx(4.0)


def test_baseline_is_the_smallest_gpu_point_with_completed_runs():
    """f1 has only a failed run: the series' ratios are to f2, not lost with f1's missing means;
    f1 stays in the series with no ratios."""
    runs = [
        make_run("f1.r0", gpus=1, point="f1", series="f8", status="failed"),
        make_run("f2.r0", gpus=2, point="f2", series="f8", duration_s=30, energy_kwh=1.0),
        make_run("f2.r1", gpus=2, point="f2", series="f8", duration_s=34, energy_kwh=1.2),
        make_run("f4.r0", gpus=4, point="f4", series="f8", duration_s=20, energy_kwh=1.4),
        make_run("f4.r1", gpus=4, point="f4", series="f8", duration_s=23, energy_kwh=1.6),
    ]
    rows = {r.point_id: r for r in analyze(runs).series}
    assert list(rows) == ["f1", "f2", "f4"]
    assert {(r.baseline_point, r.baseline_gpus) for r in rows.values()} == {("f2", 2)}
    assert rows["f2"].speedup == approx(1.0) and rows["f2"].ratio_std["energy_kwh"] == 0.0
    assert rows["f4"].speedup == approx(32 / 21.5)
    assert rows["f4"].parallel_efficiency == approx(32 / 21.5 / 2)
    assert rows["f4"].ratios["energy_kwh"] == approx(1.5 / 1.1)
    f1 = rows["f1"]
    assert f1.speedup is None and f1.parallel_efficiency is None
    assert not any(v is not None for v in [*f1.ratios.values(), *f1.ratio_std.values()])


def test_series_without_any_completed_run_has_no_ratios():
    runs = [
        make_run("a", gpus=1, point="g1", status="failed"),
        make_run("b", gpus=2, point="g2", status="interrupted"),
    ]
    rows = analyze(runs).series
    assert [r.point_id for r in rows] == ["g1", "g2"]
    assert all(r.speedup is None and r.speedup_std is None for r in rows)
    assert all(v is None for r in rows for v in [*r.ratios.values(), *r.ratio_std.values()])


def test_every_run_is_kept_with_its_status():
    runs = [
        make_run("ok", point="p"),
        make_run("bad", point="p", status="failed", duration_s=60),
        make_run("open", point="q", status="running", energy_kwh=None),
    ]
    a = analyze(runs)
    assert [r.run_id for r, _ in a.runs] == ["ok"]  # the statistics: completed runs only
    assert [(r.run_id, r.status) for r, _ in a.all_runs] == [
        ("ok", "completed"),
        ("bad", "failed"),
        ("open", "running"),
    ]
    assert [r.run_id for r in a.left_out] == ["bad", "open"]
    assert dict((r.run_id, m["runtime_s"]) for r, m in a.all_runs)["bad"] == 60


def test_point_shared_by_two_series_appears_in_both():
    runs = [
        make_run("a", gpus=1, lbs=8, point="g1-l8-b8", series="gbs8,lbs8", scaling="strong,weak"),
        make_run("b", gpus=2, lbs=4, point="g2-l4-b8", series="gbs8"),
        make_run("c", gpus=2, lbs=8, point="g2-l8-b16", series="lbs8", scaling="weak"),
    ]
    a = analyze(runs)
    members = {
        (r.series, r.scaling): sorted(x.point_id for x in a.series if x.series == r.series)
        for r in a.series
    }
    assert members[("gbs8", "strong")] == ["g1-l8-b8", "g2-l4-b8"]
    assert members[("lbs8", "weak")] == ["g1-l8-b8", "g2-l8-b16"]


def test_pareto_front_known_answer():
    runs = [
        make_run("A", point="A", duration_s=10, energy_kwh=5),
        make_run("B", point="B", duration_s=20, energy_kwh=3),
        make_run("C", point="C", duration_s=15, energy_kwh=6),  # dominated by A
        make_run("D", point="D", duration_s=30, energy_kwh=3),  # dominated by B (equal energy)
        make_run("E", point="E", duration_s=5, energy_kwh=10),
        make_run("F", point="F", duration_s=40, energy_kwh=None),  # no energy: not a candidate
    ]
    a = analyze(runs)
    assert a.pareto == {("resnet50", "NVIDIA H100"): ["E", "A", "B"]}
    assert pareto_front(a.points) == ["E", "A", "B"]


def test_pareto_front_per_model_and_hardware():
    """A FourCastNet point faster and cheaper than every ResNet50 one does not take the ResNet50
    front away: they do different work, so one front per model and hardware."""
    runs = [
        make_run("f", point="f", model="fourcastnet", duration_s=5, energy_kwh=1),
        make_run("A", point="A", duration_s=10, energy_kwh=5),
        make_run("B", point="B", duration_s=20, energy_kwh=3),
        make_run("C", point="C", duration_s=15, energy_kwh=6),  # dominated by A
        make_run("h", point="h", hardware="NVIDIA A100", duration_s=30, energy_kwh=9),
    ]
    assert analyze(runs).pareto == {
        ("fourcastnet", "NVIDIA H100"): ["f"],
        ("resnet50", "NVIDIA A100"): ["h"],
        ("resnet50", "NVIDIA H100"): ["A", "B"],
    }


def test_fine_tuning_points_get_a_front_of_their_own():
    """Fine-tuning is other work than pre-training the same model: a fine-tuning point faster
    and cheaper than every pre-training one does not take their front away."""
    from dataclasses import replace

    ft = make_run("ft", point="ft", duration_s=2, energy_kwh=0.5)
    runs = [replace(ft, tags={**ft.tags, "mode": "finetune"}),
            make_run("A", point="A", duration_s=10, energy_kwh=5),
            make_run("B", point="B", duration_s=20, energy_kwh=3)]  # fmt: skip
    assert analyze(runs).pareto == {
        ("resnet50", "NVIDIA H100"): ["A", "B"],
        ("resnet50 (finetune)", "NVIDIA H100"): ["ft"],
    }


def test_untagged_runs_group_by_shape_and_accuracy_carried():
    runs = [
        make_run("x", gpus=2, lbs=4, final={"top1_error": 30.0}),
        make_run("y", gpus=2, lbs=4, final={"top1_error": 34.0}),
    ]
    (p,) = analyze(runs).points
    assert p.point_id == "g2-l4-b8"
    assert p.metrics["top1_error"].mean == approx(32.0)
    assert p.metrics["top1_error"].std == approx(8**0.5)


def test_step_energy_pooled_per_point_and_distribution():
    runs = [
        make_run("r0", point="p"),
        make_run("r1", point="p"),
        make_run("bad", point="p", status="failed"),
    ]
    a = analyze(runs)
    pooled = step_energy_by_point(a.points, {"r0": [1.0, 2.0], "r1": [3.0], "bad": [99.0]})
    assert pooled == {"p": [1.0, 2.0, 3.0]}
    d = distribution(list(range(1, 102)))  # 1..101
    assert (d.n, d.median, d.p05, d.p95, d.mean) == (101, 51.0, 6.0, 96.0, 51.0)
    assert distribution([]) is None


def test_trainer_eval_metrics_become_the_study_accuracy_metrics():
    resnet = run_metrics(
        make_run(
            "r", final={"eval_top1": 0.25, "eval_top5": 0.5, "eval_loss": 2.0, "markers_sent": 9.0}
        )
    )
    assert resnet["top1_error"] == approx(75.0) and resnet["top5_error"] == approx(50.0)
    assert resnet["loss"] == 2.0 and resnet["eval_top1"] == 0.25
    assert "markers_sent" not in resnet  # telemetry counters are not study metrics
    fcn = run_metrics(
        make_run("f", final={"eval_rmse_mean": 0.3, "eval_acc_mean": 0.8, "eval_rmse_c0": 0.2})
    )
    assert "eval_rmse_c0" not in fcn
    assert (fcn["rmse"], fcn["acc"]) == (0.3, 0.8)


def test_accuracy_columns_are_top1_error_or_rmse_and_acc():
    def keys(final):
        return accuracy_keys(analyze([make_run("r", final=final)]).points)

    assert keys({"eval_top1": 0.7, "eval_top5": 0.9, "eval_loss": 1.0}) == ["top1_error"]
    assert keys({"eval_rmse_mean": 0.3, "eval_acc_mean": 0.8, "eval_loss": 0.2}) == ["rmse", "acc"]
    assert keys({"loss": 2.0}) == ["loss"]  # no accuracy reported: the loss stands in
    assert keys({"train_loss": 2.0}) == keys({}) == []


def test_out_of_range_accuracy_is_left_out_not_printed_as_minus_inf():
    """eval_top1 = 1.8e308 printed "top-1 err % -inf"."""
    from collector.report.analysis import final_accuracy

    out = final_accuracy({"eval_top1": 1.8e308, "eval_top5": 0.9, "eval_loss": float("inf")})
    assert "top1_error" not in out and "eval_top1" not in out and "loss" not in out
    assert abs(out["top5_error"] - 10.0) < 1e-9
    assert final_accuracy({"eval_top1": 1.5}).get("top1_error") is None


def test_a_metric_left_out_as_implausible_flags_its_point():
    """A run whose final accuracy is not a plausible number (1.8e308, inf, a fraction correct
    of 3) loses that metric in the report, and its point says so."""
    runs = [make_run("a", point="p", final={"eval_top1": 1.8e308}),
            make_run("b", point="p", repeat=1, final={"eval_top1": 0.7}),
            make_run("c", point="q", final={"eval_top1": 3.0}),
            make_run("d", point="r", final={"eval_top1": 0.6})]  # fmt: skip
    by_id = {p.point_id: p for p in analyze(runs).points}
    assert "metric_left_out" in by_id["p"].flags and "metric_left_out" in by_id["q"].flags
    assert "metric_left_out" not in by_id["r"].flags
    assert by_id["p"].metrics["top1_error"].n == 1  # the plausible one is kept
