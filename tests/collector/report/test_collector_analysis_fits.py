"""The fit's confidence interval against a worked example, propagated ratio spreads, modes."""

from __future__ import annotations

import pytest

from collector.report.analysis import analyze
from collector.report.fits import linear_fit
from tests.sweep.study_records import make_run

approx = pytest.approx


def test_slope_ci_matches_the_worked_textbook_example():
    # x = 1..5, y = 2 4 5 4 5: slope 0.6, intercept 2.2, SSE 2.4, s² = 2.4 / 3 = 0.8, Sxx = 10,
    # SE(slope) = sqrt(0.8 / 10) = 0.2828427, t(0.975, 3) = 3.1824463 (table value),
    # half width = 0.9001317; SST = 6, so R² = 1 - 2.4 / 6 = 0.6.
    fit = linear_fit([1, 2, 3, 4, 5], [2, 4, 5, 4, 5])
    assert (fit.slope, fit.intercept, fit.r2, fit.n) == (approx(0.6), approx(2.2), approx(0.6), 5)
    low, high = fit.slope_ci95
    assert low == approx(0.6 - 0.9001317, abs=1e-6)
    assert high == approx(0.6 + 0.9001317, abs=1e-6)


def test_slope_ci_needs_a_residual_degree_of_freedom():
    assert linear_fit([1, 2], [3, 5]).slope_ci95 is None
    exact = linear_fit([1, 2, 3], [2, 4, 6])
    assert exact.slope_ci95 == (approx(2.0), approx(2.0))  # a perfect line: zero width


def test_ratio_spread_is_first_order_propagation_and_zero_at_the_baseline():
    runs = [
        make_run("a0", gpus=1, point="g1", duration_s=100, energy_kwh=1.0, repeat=0),
        make_run("a1", gpus=1, point="g1", duration_s=100, energy_kwh=3.0, repeat=1),
        make_run("b0", gpus=2, point="g2", duration_s=50, energy_kwh=4.0, repeat=0),
        make_run("b1", gpus=2, point="g2", duration_s=50, energy_kwh=4.0, repeat=1),
    ]
    rows = {r.point_id: r for r in analyze(runs).series}
    assert rows["g1"].ratio_std["energy_kwh"] == 0.0
    # means 2 (std sqrt 2) and 4 (std 0): ratio 2, spread 2 x (sqrt(2) / 2) = sqrt(2)
    assert rows["g2"].ratios["energy_kwh"] == approx(2.0)
    assert rows["g2"].ratio_std["energy_kwh"] == approx(2**0.5)
    assert rows["g2"].speedup == approx(2.0) and rows["g2"].speedup_std == 0.0


def test_mode_tag_separates_pretraining_from_finetuning():
    runs = [make_run("p", point="p", model="fourcastnet"), make_run("f", point="f")]
    runs[1].tags["mode"] = "finetune"
    modes = {p.point_id: p.mode for p in analyze(runs).points}
    assert modes == {"p": "pretrain", "f": "finetune"}
