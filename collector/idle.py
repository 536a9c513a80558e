"""Per-device idle power, measured from readings taken while no run uses the device (pure core).

A device is busy from (a run's start − guard) to (its end + guard); readings outside every such
span are idle. Which spans exist is learnt from run markers, which may arrive a little after the
readings they bound, so the periodic measurement looks only at readings older than a lag.
A rank resumed from a checkpoint sends RUN_START/RUN_END again under the same key: each session
is a span of its own (a start while an older span is still open closes that one there: its
process died without RUN_END, so the device counts as busy until the new start).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from typing import Protocol

import numpy as np

from collector.energy import Sample, idle_power_w

_NAN = float("nan")


class IdleSample(Protocol):
    time_ns: int
    power_w: float | None
    temperature_c: float | None


class IdleTracker:
    def __init__(self, window_ns: int, guard_ns: int) -> None:
        self.window_ns = window_ns
        self.guard_ns = guard_ns
        # The samples of the last minute or so, in time order, as three flat arrays (NaN: not
        # read): 24 bytes a sample instead of a whole reading object (~350 bytes). At 1,000
        # GPUs x 100 Hz that is the difference between ~150 MB and ~2 GB.
        self._t = array("q")
        self._p = array("d")
        self._temp = array("d")
        self._busy: dict[object, list[list[int | None]]] = {}  # key -> [[start, end], ..]
        self.idle_power_w: float | None = None  # latest measurement
        self.measured_ns: int | None = None

    def add(self, sample: IdleSample) -> None:
        self._t.append(sample.time_ns)
        p, c = sample.power_w, sample.temperature_c
        self._p.append(_NAN if p is None else p)
        self._temp.append(_NAN if c is None else c)

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
        i, j = bisect_left(self._t, lo), bisect_right(self._t, hi)
        if not self.busy_between(lo, hi):  # the usual case, without a sample object each
            powers = np.frombuffer(self._p[i:j], dtype=float)  # a copy: self._p stays resizable
            powers = powers[~np.isnan(powers)]
            return float(np.median(powers)) if len(powers) else None
        samples = [
            Sample(t, p, None)
            for t, p in zip(self._t[i:j], self._p[i:j], strict=True)
            if p == p and not self.busy_at(t)  # p != p: NaN, not read
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
        if not self._t or self._t[0] > lo or self.busy_between(lo, until):
            return None
        value = self.measure_before(until)
        if value is not None:
            self.idle_power_w, self.measured_ns = value, until
        return value

    def temperature_at(self, time_ns: int) -> float | None:
        """Temperature of the last reading before time_ns (the run's start temperature)."""
        for k in range(bisect_left(self._t, time_ns) - 1, -1, -1):
            if self._temp[k] == self._temp[k]:  # not NaN
                return self._temp[k]
        return None

    def trim(self, before_ns: int) -> None:
        n = bisect_left(self._t, before_ns)
        if n:
            del self._t[:n], self._p[:n], self._temp[:n]
        cut = before_ns - self.guard_ns
        for key, spans in list(self._busy.items()):
            spans[:] = [s for s in spans if s[1] is None or s[1] >= cut]
            if not spans:
                del self._busy[key]
