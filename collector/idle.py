"""Per-device idle power, measured from readings taken while no run uses the device (pure core).

A device is busy from (a run's start − guard) to (its end + guard); readings outside every such
span are idle. Which spans exist is learnt from run markers, which may arrive a little after the
readings they bound, so the periodic measurement looks only at readings older than a lag.
A rank resumed from a checkpoint sends RUN_START/RUN_END again under the same key: each session
is a span of its own (a start while an older span is still open closes that one there: its
process died without RUN_END, so the device counts as busy until the new start).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from collector.energy import Sample, idle_power_w


class IdleSample(Protocol):
    time_ns: int
    power_w: float | None
    temperature_c: float | None


class IdleTracker:
    def __init__(self, window_ns: int, guard_ns: int) -> None:
        self.window_ns = window_ns
        self.guard_ns = guard_ns
        self._samples: deque[IdleSample] = deque()
        self._busy: dict[object, list[list[int | None]]] = {}  # key -> [[start, end], ..]
        self.idle_power_w: float | None = None  # latest measurement
        self.measured_ns: int | None = None

    def add(self, sample: IdleSample) -> None:
        self._samples.append(sample)

    def busy_start(self, key: object, start_ns: int) -> None:
        spans = self._busy.setdefault(key, [])
        if any(s == start_ns for s, _ in spans):
            return  # re-sent
        for span in spans:
            if span[0] is None and span[1] >= start_ns:
                span[0] = start_ns  # its end came first
                return
            if span[1] is None and span[0] < start_ns:
                span[1] = start_ns  # an older session that never ended
        spans.append([start_ns, None])

    def busy_end(self, key: object, end_ns: int) -> None:
        spans = self._busy.setdefault(key, [])
        if any(e == end_ns for _, e in spans):
            return  # re-sent
        open_ = [s for s in spans if s[1] is None and s[0] <= end_ns]
        if open_:
            max(open_, key=lambda s: s[0])[1] = end_ns
        else:
            spans.append([None, end_ns])

    def _spans(self):
        for spans in self._busy.values():
            for s, e in spans:
                yield (e if s is None else s), e

    def busy_at(self, time_ns: int) -> bool:
        g = self.guard_ns
        return any(s - g <= time_ns and (e is None or time_ns <= e + g) for s, e in self._spans())

    def busy_between(self, from_ns: int, to_ns: int) -> bool:
        g = self.guard_ns
        return any(s - g <= to_ns and (e is None or from_ns <= e + g) for s, e in self._spans())

    def measure_before(self, until_ns: int) -> float | None:
        """Idle power from the idle readings in [until − guard − window, until − guard]."""
        hi = until_ns - self.guard_ns
        lo = hi - self.window_ns
        samples = [
            Sample(s.time_ns, s.power_w, None)
            for s in self._samples
            if lo <= s.time_ns <= hi and s.power_w is not None and not self.busy_at(s.time_ns)
        ]
        if not samples:
            return None
        try:
            return idle_power_w(samples)
        except ValueError:
            return None

    def refresh(self, watermark_ns: int, lag_ns: int, every_ns: int) -> float | None:
        """Re-measure while the device idles; returns a new value when it made one."""
        until = watermark_ns - lag_ns
        if self.measured_ns is not None and until - self.measured_ns < every_ns:
            return None
        lo = until - self.guard_ns - self.window_ns
        if not self._samples or self._samples[0].time_ns > lo or self.busy_between(lo, until):
            return None
        value = self.measure_before(until)
        if value is not None:
            self.idle_power_w, self.measured_ns = value, until
        return value

    def temperature_at(self, time_ns: int) -> float | None:
        """Temperature of the last reading before time_ns (the run's start temperature)."""
        best = None
        for s in self._samples:
            if s.time_ns >= time_ns:
                break
            if s.temperature_c is not None:
                best = s.temperature_c
        return best

    def trim(self, before_ns: int) -> None:
        while self._samples and self._samples[0].time_ns < before_ns:
            self._samples.popleft()
        cut = before_ns - self.guard_ns
        for key, spans in list(self._busy.items()):
            spans[:] = [s for s in spans if s[1] is None or s[1] >= cut]
            if not spans:
                del self._busy[key]
