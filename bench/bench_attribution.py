"""Energy-attribution accuracy against ground truth, and its speed.

    .venv/bin/python bench/bench_attribution.py [--seed 0] [--epochs 6]

A simulated GPU (tests/collector/collector_energy_sim.py: exact power, counter updating every
100 ms floored to 1 mJ, instant power sampled every ~20 ms) runs epochs of DDP-like steps. For
epochs, random intervals of 10 and 100 sampling periods, and the real (marker-aligned) steps it
prints the relative error of the counter-anchored, power-shaped method ("shaped") and of the
counter linearly interpolated between readings ("linear"): mean / p95 / max, and the share of
intervals whose error is within the uncertainty the method states. Then throughput.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.energy import CounterSpec, DeviceTimeline  # noqa: E402
from tests.collector.collector_energy_sim import (  # noqa: E402
    linear_counter_energy,
    make_workload,
    readings,
    windows,
)

SCENARIOS = {
    # name: (readings() keyword arguments, CounterSpec)
    "20 ms, phase-locked": ({}, CounterSpec()),
    "21.7 ms, free-running": ({"period_s": 0.0217}, CounterSpec()),
    "20 ms, 1 s-average power": ({"power": "avg1s"}, CounterSpec(power_avg_s=1.0)),
    "20 ms, counter without power": ({"power": None}, CounterSpec()),
    "20 ms, no counter": ({"counter": False}, CounterSpec()),
}


def interval_sets(workload, seed: int) -> dict[str, list[tuple[int, int]]]:
    return {
        "epochs": workload.epochs,
        "10 periods (0.2 s)": windows(workload, 0.2, 600, seed),
        "100 periods (2 s)": windows(workload, 2.0, 300, seed + 1),
        "marker steps": workload.steps,
    }


def row(name: str, errors: np.ndarray, truth: np.ndarray, unc: np.ndarray | None) -> str:
    rel = np.abs(errors) / truth * 100
    within = f"{np.mean(np.abs(errors) <= unc) * 100:6.1f} %" if unc is not None else "     -  "
    return (
        f"    {name:8s} mean {rel.mean():7.3f} %  p95 {np.percentile(rel, 95):7.3f} %  "
        f"max {rel.max():7.3f} %  within stated uncertainty {within}"
    )


def accuracy(workload, seed: int) -> None:
    truth = workload.truth
    sets = interval_sets(workload, seed)
    for scenario, (kwargs, spec) in SCENARIOS.items():
        samples = readings(truth, seed=seed + 7, **kwargs)
        tl = DeviceTimeline(spec)
        tl.extend(samples)
        print(f"\n{scenario}  ({len(samples)} readings over {truth.duration_s:.0f} s)")
        for set_name, intervals in sets.items():
            true_j = np.array([truth.energy(a, b) for a, b in intervals])
            ivs = [tl.interval(a, b) for a, b in intervals]
            unc = np.array([iv.uncertainty_j for iv in ivs])
            err = np.array([iv.energy_j for iv in ivs]) - true_j
            rel_unc = np.median(unc / true_j) * 100
            print(f"  {set_name}: median stated uncertainty {rel_unc:.2f} %")
            print(row(ivs[0].source, err, true_j, unc))
            if kwargs.get("counter", True):
                lin = np.array([linear_counter_energy(samples, a, b) for a, b in intervals])
                print(row("linear", lin - true_j, true_j, unc))


def throughput(workload, seed: int) -> None:
    samples = readings(workload.truth, seed=seed + 9)
    tl = DeviceTimeline(max_gap_ns=1_000_000_000)
    t0 = time.perf_counter()
    tl.extend(samples)
    tl.settled_until_ns()  # builds the model
    build_s = time.perf_counter() - t0
    intervals = windows(workload, 0.2, 20_000, seed)
    t0 = time.perf_counter()
    for a, b in intervals:
        tl.interval(a, b)
    query_s = time.perf_counter() - t0
    epochs = workload.epochs * 200
    t0 = time.perf_counter()
    for a, b in epochs:
        tl.interval(a, b)
    epoch_s = time.perf_counter() - t0
    print("\nthroughput (one core)")
    print(f"  build from {len(samples)} readings: {build_s * 1e3:.1f} ms")
    print(f"  interval() on 0.2 s steps: {len(intervals) / query_s:,.0f} intervals/s")
    print(f"  interval() on epochs:      {len(epochs) / epoch_s:,.0f} intervals/s")
    streaming(samples, workload)


def streaming(samples, workload) -> None:
    """As the collector uses it: 100-reading batches, settled steps computed, 30 s kept."""
    tl = DeviceTimeline(max_gap_ns=1_000_000_000)
    pending = list(workload.steps)
    done = 0
    t0 = time.perf_counter()
    for i in range(0, len(samples), 100):
        tl.extend(samples[i : i + 100])
        settled = tl.settled_until_ns()
        while pending and pending[0][1] <= settled:
            tl.interval(*pending.pop(0))
            done += 1
        if i % 1500 == 0:
            tl.trim(settled - 30_000_000_000)
    elapsed = time.perf_counter() - t0
    print(
        f"  streaming (extend 100 + settled steps, 30 s kept): {len(samples) / elapsed:,.0f} "
        f"readings/s, {done} steps, {len(tl)} readings held at the end"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    workload = make_workload(seed=args.seed, epochs=args.epochs, steps_per_epoch=40)
    print(
        f"workload: {args.epochs} epochs x 40 steps of 0.15-0.57 s, "
        f"{workload.truth.duration_s:.0f} s; counter every 100 ms, 1 mJ"
    )
    accuracy(workload, args.seed)
    throughput(workload, args.seed)


if __name__ == "__main__":
    main()
