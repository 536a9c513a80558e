"""Synthetic devices with exactly known energy, for the pure join and store tests.

Power is piecewise constant (levels set by the test); the energy counter advances every 100 ms
holding the exact integral floored to 1 mJ (like NVML and the sim), readings come every 20 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from parawatt_proto.records import DeviceRec, MarkerRec, NodeRec, ReadingRec

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
S = 1_000_000_000


@dataclass
class SynthDevice:
    uuid: str
    kind: str = "gpu"
    idle_w: float = 50.0
    # (from_ns, power_w) breakpoints, sorted; power holds until the next one
    levels: list[tuple[int, float]] = field(default_factory=list)
    counter_period_ns: int = 100 * MS

    def power_at(self, t: int) -> float:
        p = self.idle_w
        for start, w in self.levels:
            if start <= t:
                p = w
            else:
                break
        return p

    def true_energy(self, a: int, b: int) -> float:
        """Exact integral of power over [a, b]."""
        points = sorted({a, b, *(s for s, _ in self.levels if a < s < b)})
        return sum(self.power_at(x) * (y - x) / S for x, y in zip(points, points[1:], strict=False))

    def counter_at(self, t: int) -> float:
        tick = T0 + ((t - T0) // self.counter_period_ns) * self.counter_period_ns
        return math.floor(self.true_energy(T0, tick) * 1000) / 1000 + 1000.0

    def readings(self, start: int, end: int, period_ns: int = 20 * MS, seq0: int = 0):
        out, t, seq = [], start, seq0
        while t < end:
            out.append(
                ReadingRec(seq, self.uuid, t, False, self.power_at(t), None, self.counter_at(t),
                           temperature_c=40.0 + self.power_at(t) / 10)
            )  # fmt: skip
            t += period_ns
            seq += 1
        return out

    def rec(self, index: int = 0) -> DeviceRec:
        return DeviceRec(index, self.uuid, f"synth {self.kind}", self.kind,
                         counter_update_s=0.1, counter_resolution_j=0.001)  # fmt: skip


def node(hostname: str, devices: list[SynthDevice], boot_id: str = "boot-1") -> NodeRec:
    return NodeRec(
        hostname, boot_id, "synth", devices=tuple(d.rec(i) for i, d in enumerate(devices))
    )


def marker(
    kind: str,
    t: int,
    run_id: str = "r1",
    rank: int = 0,
    epoch: int = 0,
    step: int = 0,
    device_uuid: str = "gpu-0",
    local_rank: int = 0,
    hostname: str = "n1",
    **kw,
) -> MarkerRec:
    return MarkerRec(run_id, rank, kind, epoch, step, t, device_uuid, local_rank, hostname, **kw)


def run_markers(start: int, steps: int, step_ns: int, gap_ns: int, epochs: int = 1, **kw):
    """RUN_START, per epoch EPOCH_START + steps (busy step_ns, gap_ns between), RUN_END; and
    the (start, end) of every step."""
    ms, spans, t = [marker("run_start", start, **kw)], [], start + gap_ns
    n = 0
    for e in range(epochs):
        ms.append(marker("epoch_start", t, epoch=e, **kw))
        t += gap_ns
        for _ in range(steps):
            ms.append(marker("step_start", t, epoch=e, step=n, **kw))
            ms.append(marker("step_end", t + step_ns, epoch=e, step=n, **kw))
            spans.append((t, t + step_ns))
            t += step_ns + gap_ns
            n += 1
        ms.append(marker("epoch_end", t, epoch=e, **kw))
        t += gap_ns
    ms.append(marker("run_end", t, status="completed", **kw))
    return ms, spans, t
