"""Run in a subprocess with the fake NVML on LD_LIBRARY_PATH: build the NVML backend, read it
N times, print devices, samples and the fake's NVML call counts as JSON.

Usage: python -m tests.fakenvml.dump_backend N [--interval-ms MS] [UUID...]
(UUIDs: show canonical_uuid of each)
"""

import argparse
import contextlib
import ctypes
import dataclasses
import json
import sys
import time

import pynvml

from power_daemon.backends.nvml import NvmlBackend
from power_daemon.errors import BackendUnavailable

COUNTED = (
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetFieldValues",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetUtilizationRates",
)


def call_counts() -> dict[str, int]:
    lib = ctypes.CDLL("libnvidia-ml.so.1")  # the copy nvidia-ml-py already loaded
    lib.fakenvml_call_count.restype = ctypes.c_long
    return {fn: lib.fakenvml_call_count(fn.encode()) for fn in COUNTED}


def main(reads: int, interval_s: float, uuids: list[str]) -> int:
    try:
        backend = NvmlBackend()
    except BackendUnavailable as e:
        print(json.dumps({"error": str(e)}))
        return 0
    pynvml.nvmlInit()  # another NVML user in the same process, which close() must not end
    calls_at_start = call_counts()
    began = time.monotonic()
    try:
        samples = []
        for i in range(reads):
            if i and interval_s:
                time.sleep(interval_s)
            samples.append([dataclasses.asdict(s) for s in backend.read(time.time_ns())])
        out = {
            "driver": backend.driver_version,
            "devices": [dataclasses.asdict(d) for d in backend.devices()],
            "reads": samples,
            "elapsed_s": time.monotonic() - began,
            "probe_calls": calls_at_start,
            "calls": {k: v - calls_at_start[k] for k, v in call_counts().items()},
            "canonical": {uuid: backend.canonical_uuid(uuid) for uuid in uuids},
        }
    finally:
        backend.close()
        backend.close()
    try:
        out["nvml_up_for_others"] = pynvml.nvmlDeviceGetCount() == len(out["devices"])
    except pynvml.NVMLError:
        out["nvml_up_for_others"] = False
    with contextlib.suppress(pynvml.NVMLError):  # already ended when close() did it twice
        pynvml.nvmlShutdown()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("reads", type=int)
    parser.add_argument("--interval-ms", type=float, default=0.0)
    parser.add_argument("uuids", nargs="*")
    args = parser.parse_intermixed_args()
    sys.exit(main(args.reads, args.interval_ms / 1000.0, args.uuids))
