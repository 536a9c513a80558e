"""Shared test fixtures.

Power daemon (in-process, real gRPC server on 127.0.0.1 with a free port, sim backend):

- ``sim_daemon`` (function scope): a started daemon with 2 simulated GPUs, rapl off, sampling
  every 21.7 ms (the default), hostname = this machine's. Yields a ``SimDaemon``:
    .address  "127.0.0.1:PORT"          .port     the bound port
    .backend  the SimBackend: true_energy_j(uuid, start_ns, end_ns) is the exact energy of an
              interval; counter_tick_ns(t) the last energy-counter update at or before t
    .daemon   the DaemonServer (.core: ring buffer/sampler, .boot_id, .close())
    .config   the DaemonConfig           .uuids    GPU UUIDs in device order
  Markers sent with an empty device_uuid drive GPU number local_rank: busy while a step is open.
- ``start_sim_daemon(**config_overrides)`` (factory): start more daemons in one test, e.g.
  ``start_sim_daemon(hostname="node1", sim_devices=4)``; any DaemonConfig field can be given
  (``sim=SimParams(...)`` for power levels). Give each a different hostname to simulate several
  nodes. All are closed at teardown (closing one earlier, to simulate a crash, is fine).
- ``fake_nvml_lib`` (session): directory holding a freshly built fake ``libnvidia-ml.so.1``
  (tests/fakenvml/fakenvml.c; skips without gcc). Run NVML code in a subprocess with
  ``env=tests.fakenvml.build.nvml_env(fake_nvml_lib, count="2", no_energy="1", ...)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from power_daemon.backends.sim import SimBackend
from power_daemon.config import DaemonConfig
from power_daemon.serve.server import DaemonServer, create_server


@dataclasses.dataclass
class SimDaemon:
    address: str
    port: int
    backend: SimBackend
    daemon: DaemonServer
    config: DaemonConfig

    @property
    def uuids(self) -> list[str]:
        return [d.uuid for d in self.backend.devices()]


_SIM_DEFAULTS = dict(listen="127.0.0.1:0", backend="sim", sim_devices=2, rapl="off")


@pytest.fixture
def start_sim_daemon() -> Iterator[Callable[..., SimDaemon]]:
    started: list[DaemonServer] = []

    def start(**overrides) -> SimDaemon:
        config = DaemonConfig(**{**_SIM_DEFAULTS, **overrides})
        server, port = create_server(config)
        started.append(server)
        server.start()
        assert isinstance(server.backend, SimBackend), "use backend='sim' for sim daemons"
        return SimDaemon(f"127.0.0.1:{port}", port, server.backend, server, config)

    yield start
    for server in started:
        server.close()


@pytest.fixture
def sim_daemon(start_sim_daemon: Callable[..., SimDaemon]) -> SimDaemon:
    return start_sim_daemon()


@pytest.fixture(scope="session")
def fake_nvml_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fakenvml.build import GccMissing, build_fake_nvml

    lib_dir = tmp_path_factory.mktemp("fakenvml")
    try:
        build_fake_nvml(lib_dir)
    except GccMissing as e:
        pytest.skip(str(e))
    return lib_dir
