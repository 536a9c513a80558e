"""Build the backend a DaemonConfig asks for, saying in one log line what was chosen."""

from __future__ import annotations

import logging
import socket
import time

from power_daemon.backends.base import Backend, CombinedBackend
from power_daemon.config import DaemonConfig
from power_daemon.errors import BackendUnavailable

log = logging.getLogger("power_daemon")


def node_hostname(config: DaemonConfig) -> str:
    return config.hostname or socket.gethostname()


def build_backend(config: DaemonConfig) -> Backend:
    """nvml | sim | auto (nvml when a GPU is there, else sim), plus rapl where readable.

    Raises BackendUnavailable only when nvml was asked for explicitly and is not there.
    """
    notes: list[str] = []
    gpu = _build_gpu(config, notes)
    parts: list[Backend] = [gpu]
    if config.rapl != "off":
        rapl = _build_rapl(config, notes)
        if rapl is not None:
            parts.append(rapl)
    backend = parts[0] if len(parts) == 1 else CombinedBackend(parts)
    n = len(backend.devices())
    log.info("backend %s with %d devices (%s)", backend.name, n, "; ".join(notes))
    return backend


def _build_gpu(config: DaemonConfig, notes: list[str]) -> Backend:
    if config.backend in ("auto", "nvml"):
        from power_daemon.backends.nvml import NvmlBackend  # pynvml only when asked for

        try:
            nvml = NvmlBackend()
            notes.append(f"nvml: {len(nvml.devices())} GPUs, driver {nvml.driver_version}")
            return nvml
        except BackendUnavailable as e:
            if config.backend == "nvml":
                raise
            notes.append(f"{e}, so simulating {config.sim_devices} GPUs")
    else:
        notes.append(f"simulating {config.sim_devices} GPUs")
    from power_daemon.backends.sim import SimBackend

    return SimBackend(
        config.sim_devices,
        config.sim,
        hostname=node_hostname(config),
        seed=config.seed,
        start_ns=time.time_ns(),
    )


def _build_rapl(config: DaemonConfig, notes: list[str]) -> Backend | None:
    from power_daemon.backends.rapl import RaplBackend

    try:
        rapl = RaplBackend(config.rapl_root, node_hostname(config), time.time_ns())
    except BackendUnavailable as e:
        # Both auto and on keep measuring GPUs; `on` only makes the message louder.
        notes.append(f"{e}; CPU/DRAM energy not measured")
        if config.rapl == "on":
            log.warning("%s; CPU/DRAM energy not measured", e)
        return None
    notes.append(f"rapl: {len(rapl.devices())} zones")
    return rapl
