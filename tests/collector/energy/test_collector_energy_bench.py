"""bench/bench_attribution.py, the script the README's calibration table comes from: it runs,
rejects what it cannot do with a plain error, and its "at exactly 95 %" references mean what
they say on errors whose distribution is known."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bench_attribution.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_attribution", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300
    )


def test_one_short_workload_prints_every_class_it_can_hold_and_says_which_it_cannot():
    out = _run("--seeds", "1", "--epochs", "1", "--modes", "full")
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if "95 % covers" in line]
    names = [line.split(" n ")[0].strip() for line in rows]
    assert names == ["0.05 s", "0.2 s", "1 s", "3 s", "10 s", "marker steps", "epochs"]
    assert all("rescaled" in line and "one size" in line and "flawless" in line for line in rows)
    assert "(30 s: longer than the workload's epochs; more --epochs)" in out.stdout
    assert "interval() on 0.2 s steps" in out.stdout


def test_bad_arguments_get_a_plain_error():
    zero = _run("--seeds", "0")
    assert zero.returncode == 2 and "--seeds: must be 1 or more, not 0" in zero.stderr
    typo = _run("--modes", "ful")
    assert typo.returncode == 2 and "unknown --modes ['ful']" in typo.stderr
    assert "random load (partial)" in typo.stderr  # says which modes there are


def test_reference_widths_on_errors_of_known_shape():
    bench = _bench()
    rng = np.random.default_rng(3)
    n = 200_000
    truth = np.full(n, 100.0)
    same = np.ones(n)
    normal = rng.normal(0.0, same)
    # a normal error, one sigma for all, known: every reference is 1.96 / 0.674 = 2.9x
    rescaled, fixed = bench.reference_widths(normal, 1.96 * same, np.abs(normal) / truth * 100)
    assert 2.85 < rescaled < 2.95 and 2.85 < fixed < 2.95
    assert 2.85 < bench.flawless_width(1.96 * same) < 2.95
    # sigmas that differ 4x, each known exactly: the width metric itself moves off 2.9x (the
    # median error comes mostly from the smaller sigmas), for a flawless model as for this one
    sigma = rng.uniform(0.5, 2.0, n)
    mixed = rng.normal(0.0, sigma)
    rescaled, _ = bench.reference_widths(mixed, 1.96 * sigma, np.abs(mixed) / truth * 100)
    flawless = bench.flawless_width(1.96 * sigma)
    assert 3.1 < flawless < 3.3 and abs(rescaled - flawless) < 0.05
    # sigma stated twice too large: rescaling takes the scale away, the width itself does not
    rescaled2, _ = bench.reference_widths(mixed, 2 * 1.96 * sigma, np.abs(mixed) / truth * 100)
    assert abs(rescaled2 - rescaled) < 0.05
    assert abs(bench.flawless_width(2 * 1.96 * sigma) - flawless) < 0.05
    # heavy tails (Laplace): ln 20 / ln 2 = 4.3x for one size, whatever the interval
    laplace = rng.laplace(0.0, 1.0, n)
    _, fixed_l = bench.reference_widths(laplace, 1.96 * same, np.abs(laplace) / truth * 100)
    assert 4.2 < fixed_l < 4.45
