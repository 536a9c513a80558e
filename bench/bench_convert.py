"""Decode micro-benchmark: a StreamBatch of 10,000 readings into ReadingRecs through the
contract's row decoder (parawatt_proto.convert.readings), and the same readings as
ReadingColumns into a ReadingBlock (convert.reading_block, what the collector asks daemons for),
plus the daemon's cost of re-packing rows as columns (convert.reading_columns_pb).

    .venv/bin/python bench/bench_convert.py             # best and median of 25 rounds
    .venv/bin/python bench/bench_convert.py --rounds 100

Prints microseconds per reading. The best round is the figure to compare (others' load only
ever adds time); run it twice on a quiet machine before believing a difference of a few %.
"""

from __future__ import annotations

import argparse
import statistics
import time

from parawatt_proto import convert
from parawatt_proto import parawatt_pb2 as pb

READINGS = 10_000
DEVICES = 8


def batch() -> pb.StreamBatch:
    """Full readings, as the NVML backend sends them, round-tripped through the wire format."""
    readings = [
        pb.Reading(
            seq=i, device=i % DEVICES, time_ns=1_800_000_000_000_000_000 + i,
            power_w=300.0 + i % 7, power_avg_w=290.0, energy_j=1e6 + i, gpu_util_pct=97.0,
            mem_util_pct=40.0, memory_used_bytes=3e10, temperature_c=61.0, sm_clock_mhz=1980.0,
            mem_clock_mhz=2619.0,
        )
        for i in range(READINGS)
    ]  # fmt: skip
    return pb.StreamBatch.FromString(pb.StreamBatch(readings=readings).SerializeToString())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    msg, uuids = batch(), {i: f"GPU-{i}" for i in range(DEVICES)}
    cols = pb.ReadingColumns.FromString(
        convert.reading_columns_pb(msg.readings).SerializeToString()
    )
    for name, fn in (
        ("rows -> ReadingRec", lambda: convert.readings(msg, uuids)),
        ("columns -> ReadingBlock", lambda: convert.reading_block(cols, uuids)),
        ("daemon: rows -> columns", lambda: convert.reading_columns_pb(msg.readings)),
    ):
        times = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) / READINGS * 1e6)
        print(
            f"{name:24} {READINGS} readings: best {min(times):.3f} us/reading, "
            f"median {statistics.median(times):.3f} us/reading ({args.rounds} rounds)"
        )


if __name__ == "__main__":
    main()
