"""Run in a subprocess with the fake NVML on LD_LIBRARY_PATH: build the NVML backend, read it
N times, print devices and samples as JSON.

Usage: python -m tests.fakenvml.dump_backend N [UUID...]   (UUIDs: show canonical_uuid of each)
"""

import contextlib
import dataclasses
import json
import sys
import time

import pynvml

from power_daemon.backends.nvml import NvmlBackend
from power_daemon.errors import BackendUnavailable


def main(reads: int, uuids: list[str]) -> int:
    try:
        backend = NvmlBackend()
    except BackendUnavailable as e:
        print(json.dumps({"error": str(e)}))
        return 0
    pynvml.nvmlInit()  # another NVML user in the same process, which close() must not end
    try:
        out = {
            "driver": backend.driver_version,
            "devices": [dataclasses.asdict(d) for d in backend.devices()],
            "reads": [
                [dataclasses.asdict(s) for s in backend.read(time.time_ns())] for _ in range(reads)
            ],
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
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3, sys.argv[2:]))
