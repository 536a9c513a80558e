"""A real power daemon in its own process (sim backend), for tests that kill, stop or restart it.

with DaemonProcess(tmp_path) as daemon:      # daemon.address == "127.0.0.1:PORT"
    daemon.pause(); daemon.resume()           # SIGSTOP / SIGCONT: a hung, then healthy daemon
    daemon.kill()                             # a crash (SIGKILL)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.torchrun import PYTHON, REPO


class DaemonProcess:
    def __init__(self, workdir: Path, port: int = 0, sim_devices: int = 2, timeout_s: float = 30):
        port_file = Path(workdir) / f"daemon-port-{time.monotonic_ns()}"
        self.log = open(Path(workdir) / f"daemon-{time.monotonic_ns()}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "power_daemon", "serve", "--backend", "sim", "--no-rapl",
             "--sim-devices", str(sim_devices), "--listen", f"127.0.0.1:{port}",
             "--port-file", str(port_file)],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"power daemon did not start (see {self.log.name})")
            time.sleep(0.05)
        self.port = int(port_file.read_text().strip())
        self.address = f"127.0.0.1:{self.port}"

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
