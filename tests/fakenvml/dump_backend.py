"""Run in a subprocess with the fake NVML on LD_LIBRARY_PATH: build the NVML backend, read it
N times, print devices and samples as JSON. Usage: python -m tests.fakenvml.dump_backend N"""

import dataclasses
import json
import sys
import time

from power_daemon.backends.nvml import NvmlBackend
from power_daemon.errors import BackendUnavailable


def main(reads: int) -> int:
    try:
        backend = NvmlBackend()
    except BackendUnavailable as e:
        print(json.dumps({"error": str(e)}))
        return 0
    try:
        out = {
            "driver": backend.driver_version,
            "devices": [dataclasses.asdict(d) for d in backend.devices()],
            "reads": [
                [dataclasses.asdict(s) for s in backend.read(time.time_ns())] for _ in range(reads)
            ],
        }
    finally:
        backend.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
