"""Per-device, per-second aggregation of raw readings (pure core).

Readings of one device arrive in time order (one daemon, one clock), so a second is complete when
a reading of a later second arrives; only complete seconds are emitted. A collector restart feeds
the stored raw readings of the unfinished second again (see rebuild), so nothing is half-counted.
Readings come as columns (a ReadingBlock): each block is cut into runs of one device and one
second, reduced in C (numpy reduceat), and each run is folded into its device's open second:
Python work per run (a device's readings of one second in one stream message), not per reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from collector.records import SecondAggregate
from parawatt_proto.block import FLOAT_INDEX, ReadingBlock, as_block
from parawatt_proto.records import ReadingRec

NS = 1_000_000_000
_P, _E, _U = FLOAT_INDEX["power_w"], FLOAT_INDEX["energy_j"], FLOAT_INDEX["gpu_util_pct"]
_T, _C = FLOAT_INDEX["temperature_c"], FLOAT_INDEX["sm_clock_mhz"]
_M = FLOAT_INDEX["memory_used_bytes"]
_NONE = float("-inf")  # a max over no values


@dataclass(slots=True)
class _Open:
    """The running statistics of a device's open second."""

    second: int
    samples: int
    p_sum: float
    p_n: int
    p_max: float
    e_first: float | None
    e_last: float | None
    u_sum: float
    u_n: int
    t_max: float
    c_sum: float
    c_n: int
    m_max: float

    def merge(self, o: _Open) -> None:
        self.samples += o.samples
        self.p_sum += o.p_sum
        self.p_n += o.p_n
        self.p_max = max(self.p_max, o.p_max)
        if self.e_first is None:
            self.e_first = o.e_first
        if o.e_last is not None:
            self.e_last = o.e_last
        self.u_sum += o.u_sum
        self.u_n += o.u_n
        self.t_max = max(self.t_max, o.t_max)
        self.c_sum += o.c_sum
        self.c_n += o.c_n
        self.m_max = max(self.m_max, o.m_max)

    def summary(self, uuid: str) -> SecondAggregate:
        def top(v: float) -> float | None:
            return None if v == _NONE else v

        return SecondAggregate(
            device_uuid=uuid,
            second=self.second,
            samples=self.samples,
            avg_power_w=self.p_sum / self.p_n if self.p_n else None,
            max_power_w=top(self.p_max),
            energy_first_j=self.e_first,
            energy_last_j=self.e_last,
            avg_gpu_util_pct=self.u_sum / self.u_n if self.u_n else None,
            max_temperature_c=top(self.t_max),
            avg_sm_clock_mhz=self.c_sum / self.c_n if self.c_n else None,
            max_memory_used_bytes=top(self.m_max),
        )


def runs(block: ReadingBlock) -> list[tuple[str, _Open]]:
    """The block's readings (lost ones left out) as runs of one device and one second, each
    device's runs in arrival order."""
    if block.lost.any():
        block = block.take(~block.lost)
    n = len(block)
    if not n:
        return []
    order = np.argsort(block.dev, kind="stable")
    dev, sec = block.dev[order], block.time_ns[order] // NS
    starts = np.flatnonzero(np.concatenate(([True], (dev[1:] != dev[:-1]) | (sec[1:] != sec[:-1]))))
    v = block.values[order]

    def stats(k: int):
        col = v[:, k]
        ok = ~np.isnan(col)
        return np.add.reduceat(np.where(ok, col, 0.0), starts), np.add.reduceat(ok, starts)

    def top(k: int):
        col = v[:, k]
        return np.maximum.reduceat(np.where(np.isnan(col), _NONE, col), starts)

    e = v[:, _E]
    e_ok = ~np.isnan(e)
    idx = np.arange(n)
    first = np.minimum.reduceat(np.where(e_ok, idx, n), starts).tolist()
    last = np.maximum.reduceat(np.where(e_ok, idx, -1), starts).tolist()
    e = e.tolist()
    counts = np.diff(np.append(starts, n)).tolist()
    (ps, pn), (us, un), (cs, cn) = stats(_P), stats(_U), stats(_C)
    columns = zip(dev[starts].tolist(), sec[starts].tolist(), counts, ps.tolist(), pn.tolist(),
                  top(_P).tolist(), first, last, us.tolist(), un.tolist(), top(_T).tolist(),
                  cs.tolist(), cn.tolist(), top(_M).tolist(), strict=True)  # fmt: skip
    uuids = block.uuids
    return [
        (uuids[d], _Open(s, k, p_s, p_n, p_m, e[f] if f < n else None, e[la] if la >= 0 else None,
                         u_s, u_n, t_m, c_s, c_n, m_m))
        for d, s, k, p_s, p_n, p_m, f, la, u_s, u_n, t_m, c_s, c_n, m_m in columns
    ]  # fmt: skip


class SecondAggregator:
    def __init__(self, done_until: dict[str, int] | None = None) -> None:
        # Last second already stored per device: readings at or before it are ignored.
        self._done_until = dict(done_until or {})
        self._open: dict[str, _Open] = {}  # uuid -> its open second

    def add(self, readings: ReadingBlock | Sequence[ReadingRec]) -> list[SecondAggregate]:
        out: list[SecondAggregate] = []
        open_, done = self._open, self._done_until
        for uuid, run in runs(as_block(readings)):
            second = run.second
            current = open_.get(uuid)
            if current is not None:
                if second == current.second:
                    current.merge(run)
                    continue
                if second < current.second:
                    continue  # out of order (clock stepped back): never reopen a second
                out.append(current.summary(uuid))
                done[uuid] = current.second
                del open_[uuid]
            if second <= done.get(uuid, -1):
                continue
            open_[uuid] = run
        return out

    def forget(self, uuids: list[str]) -> None:
        """Devices now aggregated by another collector: their open seconds are not ours."""
        for uuid in uuids:
            self._open.pop(uuid, None)
            self._done_until.pop(uuid, None)

    def set_done(self, done_until: dict[str, int]) -> None:
        """Last stored second per device, from the database (a device taken over)."""
        for uuid, second in done_until.items():
            self._done_until[uuid] = max(second, self._done_until.get(uuid, second))

    def open_seconds(self) -> dict[str, int]:
        return {uuid: run.second for uuid, run in self._open.items()}
