"""Client fixtures: a collector on SQLite following a sim daemon, for tests that read results."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from collector.config import CollectorConfig
from collector.service import create_collector


@dataclass
class Stack:
    daemon: object  # SimDaemon (tests/conftest.py) or DaemonProcess
    db: str  # the collector's database URL

    @property
    def address(self) -> str:
        return self.daemon.address


@pytest.fixture
def start_collector(tmp_path):
    started = []

    def start(address: str, name: str = "parawatt.db") -> str:
        url = f"sqlite:///{tmp_path / name}"
        config = CollectorConfig(daemons=(address,), db_url=url, metrics_listen=None,
                                 late_bound_s=1.0, flush_interval_s=0.1)  # fmt: skip
        started.append(create_collector(config).start())
        return url

    yield start
    for collector in started:
        collector.close()


@pytest.fixture
def stack(sim_daemon, start_collector) -> Stack:
    """A sim daemon (2 GPUs) and a collector writing SQLite: what a node and a cluster run."""
    return Stack(sim_daemon, start_collector(sim_daemon.address))


def assert_every_step_has_energy(res, ranks: int, steps: int) -> None:
    """Every step of every rank has an interval with energy, and job-wide sums per step."""
    assert res.complete and res.status == "completed"
    assert sorted((s.rank, s.step) for s in res.steps) == [
        (r, k) for r in range(ranks) for k in range(steps)
    ]
    assert all(s.energy_j is not None and s.energy_j > 0 for s in res.steps)
    assert all(s.uncertainty_j is not None for s in res.steps)
    assert [j.step for j in res.job_steps] == list(range(steps))
    assert all(j.ranks == ranks and j.energy_j > 0 for j in res.job_steps)
    for j in res.job_steps:
        mine = [s.energy_j for s in res.steps if s.step == j.step]
        assert abs(j.energy_j - sum(mine)) < 1e-6
    assert res.energy_j > 0 and res.world_size == ranks
