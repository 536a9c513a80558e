"""`parawatt.track` per-step cost (prints figures; not a test).

    .venv/bin/python bench/bench_client.py [--calls 200000]

`run.step()` (one queued item per step, host clock) with and without a metric, against the
marker client's `mark()` (what the trainer called twice a step before: STEP_START + STEP_END), all
with the sender thread live against a real `power-daemon serve` subprocess (sim backend).
Per call: p50/p99 of blocks of 100 calls, and of single calls with the timer's own overhead
subtracted. Target: run.step() p50 <= 1 us.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_trainer import pct, start_daemon  # noqa: E402

import parawatt  # noqa: E402
from parawatt.client import STEP_END, STEP_START  # noqa: E402


def measure(call, calls: int) -> tuple[list[float], list[float]]:
    clock = time.perf_counter_ns
    for _ in range(2000):  # warm-up
        call()
    blocks = []
    for b in range(calls // 100):
        t0 = clock()
        for _ in range(100):
            call()
        blocks.append((clock() - t0) / 100)
        if b % 50 == 0:
            time.sleep(0.001)  # let the sender drain, as the gaps between steps do
    empty = []
    for _ in range(20000):
        t0 = clock()
        empty.append(clock() - t0)
    overhead = statistics.median(empty)
    single = []
    for i in range(min(calls, 100000)):
        t0 = clock()
        call()
        single.append(clock() - t0 - overhead)
        if i % 5000 == 0:
            time.sleep(0.001)
    return blocks, single


def report(name: str, blocks: list[float], single: list[float]) -> None:
    print(f"{name}")
    print(f"   blocks of 100: p50 {statistics.median(blocks) / 1000:.3f} us, "
          f"p99 {pct(blocks, 99) / 1000:.3f} us")  # fmt: skip
    print(f"   single calls:  p50 {statistics.median(single) / 1000:.3f} us, "
          f"p99 {pct(single, 99) / 1000:.3f} us")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_daemon(Path(tmp))
        try:
            print(f"sim daemon at {address}; sender threads live; timer overhead subtracted\n")
            with parawatt.track(daemon=address, run_id="bench-client") as run:
                report("1. run.step()", *measure(run.step, args.calls))
                report("2. run.step(loss=x)", *measure(lambda: run.step(loss=0.5), args.calls))
                client = run._client
                metrics = {"loss": 0.5, "lr": 0.1, "samples": 256}

                def mark_once():
                    client.mark(STEP_END, 0, 1, metrics)

                def mark_pair():
                    client.mark(STEP_START, 0, 1)
                    client.mark(STEP_END, 0, 1, metrics)

                report("3. mark() (one boundary)", *measure(mark_once, args.calls))
                report("4. mark() x2 (the trainer's old step)", *measure(mark_pair, args.calls))
            s = run.summary
            print(f"\nsent {s['markers_sent']}, dropped {s['markers_dropped']} (bursts far beyond "
                  "the queue: the overflow path at work)")  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
