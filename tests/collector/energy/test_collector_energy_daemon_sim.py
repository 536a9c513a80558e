"""Energy attribution against the daemon's own sim backend (an independent ground truth)."""

import random

import numpy as np
import pytest

from collector.energy.timeline import CounterSpec, DeviceTimeline, Sample
from parawatt_proto.records import MarkerRec
from power_daemon.backends.sim import SimBackend
from power_daemon.config import SimParams

T0_NS = 1_750_000_000_000_000_000
PERIOD_NS = 20_000_000


def _drive(seed: int):
    """Readings every ~20 ms while a rank runs 2 epochs of steps; returns what a collector
    sees (readings, step and epoch bounds) and the backend that knows the truth."""
    rng = random.Random(seed)
    sim = SimBackend(1, SimParams(), hostname="node", seed=seed, start_ns=T0_NS)
    uuid = sim.devices()[0].uuid
    events: list[tuple[int, str, int, int]] = []
    t = T0_NS + 1_000_000_000
    events.append((t, "run_start", 0, 0))
    steps, epochs, step = [], [], 0
    for epoch in range(2):
        epoch_start = t
        for _ in range(15):
            end = t + rng.randrange(150_000_000, 450_000_000)
            events += [
                (t, "step_start", epoch, step),
                (end, "step_end", epoch, step),
            ]
            steps.append((t, end))
            t = end + rng.randrange(5_000_000, 60_000_000)  # data loading between steps
            step += 1
        epochs.append((epoch_start, t))
        t += 500_000_000
    events.append((t, "run_end", 0, 0))
    readings, k = [], 0
    for when, kind, epoch, st in events + [(t + 1_000_000_000, None, 0, 0)]:
        while (now := T0_NS + k * PERIOD_NS + rng.randrange(0, 3_000_000)) < when:
            (s,) = sim.read(now)
            readings.append(s)
            k += 1
        if kind is not None:
            sim.on_marker(MarkerRec("run", 0, kind, epoch, st, when, device_uuid=uuid), when)
    return sim, uuid, readings, steps, epochs


@pytest.fixture(scope="module")
def driven():
    return _drive(seed=7)


@pytest.mark.parametrize("power", ["instant", "average"])
def test_against_the_daemon_sim(driven, power):
    sim, uuid, readings, steps, epochs = driven
    spec = CounterSpec(power_avg_s=1.0) if power == "average" else CounterSpec()
    tl = DeviceTimeline(spec)
    tl.extend(
        Sample(r.time_ns, r.power_w if power == "instant" else r.power_avg_w, r.energy_j)
        for r in readings
    )
    for a, b in epochs:
        iv = tl.interval(a, b)
        true_j = sim.true_energy_j(uuid, a, b)
        assert abs(iv.energy_j - true_j) < 0.005 * true_j
        assert iv.flags == frozenset()
    err = np.array([tl.interval(a, b).energy_j - sim.true_energy_j(uuid, a, b) for a, b in steps])
    unc = np.array([tl.interval(a, b).uncertainty_j for a, b in steps])
    assert np.mean(np.abs(err) <= unc) >= 0.95
