"""Per-device, per-second aggregation of raw readings (pure core).

Readings of one device arrive in time order (one daemon, one clock), so a second is complete when
a reading of a later second arrives; only complete seconds are emitted. A collector restart feeds
the stored raw readings of the unfinished second again (see rebuild), so nothing is half-counted.
A second's readings are only collected while it is open and summarized once when it closes:
sum()/max() over a list run in C, which matters at 50,000 readings/s.
"""

from __future__ import annotations

from collector.records import SecondAggregate
from parawatt_proto.records import ReadingRec

NS = 1_000_000_000


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(uuid: str, second: int, rs: list[ReadingRec]) -> SecondAggregate:
    power = [r.power_w for r in rs if r.power_w is not None]
    energy = [r.energy_j for r in rs if r.energy_j is not None]
    temps = [r.temperature_c for r in rs if r.temperature_c is not None]
    mem = [r.memory_used_bytes for r in rs if r.memory_used_bytes is not None]
    return SecondAggregate(
        device_uuid=uuid,
        second=second,
        samples=len(rs),
        avg_power_w=_mean(power),
        max_power_w=max(power) if power else None,
        energy_first_j=energy[0] if energy else None,
        energy_last_j=energy[-1] if energy else None,
        avg_gpu_util_pct=_mean([r.gpu_util_pct for r in rs if r.gpu_util_pct is not None]),
        max_temperature_c=max(temps) if temps else None,
        avg_sm_clock_mhz=_mean([r.sm_clock_mhz for r in rs if r.sm_clock_mhz is not None]),
        max_memory_used_bytes=max(mem) if mem else None,
    )


class SecondAggregator:
    def __init__(self, done_until: dict[str, int] | None = None) -> None:
        # Last second already stored per device: readings at or before it are ignored.
        self._done_until = dict(done_until or {})
        self._open: dict[str, tuple[int, list[ReadingRec]]] = {}  # uuid -> (second, readings)

    def add(self, readings: list[ReadingRec]) -> list[SecondAggregate]:
        out: list[SecondAggregate] = []
        open_ = self._open
        for r in readings:
            if r.lost:
                continue
            second = r.time_ns // NS
            bucket = open_.get(r.device_uuid)
            if bucket is not None and bucket[0] == second:
                bucket[1].append(r)
                continue
            uuid = r.device_uuid
            if bucket is not None:
                if second < bucket[0]:
                    continue  # out of order (clock stepped back): never reopen a second
                out.append(summarize(uuid, *bucket))
                self._done_until[uuid] = bucket[0]
            if second <= self._done_until.get(uuid, -1):
                continue
            open_[uuid] = (second, [r])
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
        return {uuid: second for uuid, (second, _) in self._open.items()}
