"""Per-device idle power from a long history of low-load readings (pure core).

A device is busy from (a run's start - guard) to (its end + guard) (BusyIndex); readings
outside every such span, with low utilisation and low clocks where the device reports them,
are idle. Idle readings are averaged per second of consecutive idle readings; the seconds are
grouped into buckets (default a minute), each summarised by a low quantile (p10) of its 1 s
averages; the device's idle power is the median of its buckets' p10 over the history kept
(hours; the buckets are persisted, so a restarted collector keeps its history). A device whose
history holds fewer than `min_s` idle seconds has no trustworthy idle power: None (intervals
are then flagged "idle_unknown"). A busy window, another job's load without markers (high
utilisation) or a short quiet moment between runs therefore never becomes "idle".

Markers may arrive a little after the readings they bound, so a reading is judged only once
the readings are `lag` past it. Readings are judged at most every 45 ms (a 1 s average needs no
more) and cost O(log runs) each: the busy spans are a sorted, merged list plus a sorted list of
open starts, searched by bisection once per stretch of readings in the same state.
A rank resumed from a checkpoint sends RUN_START/RUN_END again under the same key: each session
is a span of its own (a start while an older span is still open closes that one there: its
process died without RUN_END, so the device counts as busy until the new start).
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import NamedTuple, Protocol

import numpy as np

from collector.records import IdleBucket
from parawatt_proto.block import none_for_nan

SECOND_NS = 1_000_000_000
IDLE_UTIL_MAX_PCT = 10.0  # a 1 s average above this utilisation is not idle
IDLE_CLOCK_FACTOR = 2.0  # ... nor one whose SM clock is this far above the lowest seen
BUCKET_QUANTILE = 10.0  # percentile of a bucket's 1 s averages that summarises it
TEMPERATURE_EVERY_NS = 250_000_000
IDLE_EVERY_NS = 45_000_000  # readings closer than this to the last one kept are not judged


class IdleSample(Protocol):
    time_ns: int
    power_w: float | None
    temperature_c: float | None
    gpu_util_pct: float | None
    sm_clock_mhz: float | None


class IdleRow(NamedTuple):
    """An IdleSample cut from a block of readings (IdleTracker.add_columns)."""

    time_ns: int
    power_w: float | None
    temperature_c: float | None
    gpu_util_pct: float | None
    sm_clock_mhz: float | None


IDLE_COLUMNS = ("power_w", "temperature_c", "gpu_util_pct", "sm_clock_mhz")  # IdleRow's order


class BusyIndex:
    """Busy spans of run sessions, queried in O(log n) (n: spans held)."""

    def __init__(self, guard_ns: int) -> None:
        self.guard_ns = guard_ns
        self._keys: dict[object, list[list[int | None]]] = {}  # key -> [[start, end], ..]
        self._s: list[int] = []  # closed spans, merged: sorted, disjoint
        self._e: list[int] = []
        self._open: list[int] = []  # starts of open spans (sorted, with repeats)

    def start(self, key: object, start_ns: int) -> None:
        spans = self._keys.setdefault(key, [])
        if any(s == start_ns for s, _ in spans):
            return  # re-sent
        for span in spans:
            if span[0] is None and span[1] >= start_ns:
                span[0] = start_ns  # its end came first
                self._close(start_ns, span[1])
                return
            if span[1] is None and span[0] < start_ns:
                span[1] = start_ns  # an older session that never ended
                self._unopen(span[0])
                self._close(span[0], start_ns)
        spans.append([start_ns, None])
        bisect.insort(self._open, start_ns)

    def end(self, key: object, end_ns: int) -> None:
        spans = self._keys.setdefault(key, [])
        if any(e == end_ns for _, e in spans):
            return  # re-sent
        open_ = [s for s in spans if s[1] is None and s[0] <= end_ns]
        if open_:
            span = max(open_, key=lambda s: s[0])
            span[1] = end_ns
            self._unopen(span[0])
            self._close(span[0], end_ns)
        else:
            spans.append([None, end_ns])
            self._close(end_ns, end_ns)

    def busy_between(self, from_ns: int, to_ns: int) -> bool:
        g = self.guard_ns
        if self._open and self._open[0] - g <= to_ns:
            return True
        k = bisect.bisect_right(self._s, to_ns + g) - 1
        return k >= 0 and self._e[k] + g >= from_ns

    def busy_at(self, time_ns: int) -> bool:
        return self.busy_between(time_ns, time_ns)

    def state_at(self, t: int) -> tuple[bool, int]:
        """(busy at t, the last time that answer holds for) - one lookup for a run of readings."""
        g, never = self.guard_ns, 1 << 62
        first_open = self._open[0] - g if self._open else never
        if first_open <= t:
            return True, never
        k = bisect.bisect_right(self._s, t + g) - 1
        if k >= 0 and self._e[k] + g >= t:
            return True, self._e[k] + g
        nxt = self._s[k + 1] - g - 1 if k + 1 < len(self._s) else never
        return False, min(nxt, first_open - 1)

    def trim(self, before_ns: int) -> None:
        """Forget closed spans that ended before before_ns - guard."""
        cut = before_ns - self.guard_ns
        k = bisect.bisect_left(self._e, cut)
        if k:
            del self._s[:k], self._e[:k]
        for key, spans in list(self._keys.items()):
            spans[:] = [s for s in spans if s[1] is None or s[1] >= cut]
            if not spans:
                del self._keys[key]

    def _unopen(self, start_ns: int) -> None:
        k = bisect.bisect_left(self._open, start_ns)
        if k < len(self._open) and self._open[k] == start_ns:
            del self._open[k]

    def _close(self, s: int, e: int) -> None:
        """Add [s, e] to the merged closed spans."""
        lo = bisect.bisect_left(self._e, s)  # first span ending at/after s
        hi = bisect.bisect_right(self._s, e)  # spans from here on start after e
        if lo < hi:
            s, e = min(s, self._s[lo]), max(e, self._e[hi - 1])
        self._s[lo:hi], self._e[lo:hi] = [s], [e]


class _Second:
    """Sums of consecutive idle readings until they span a second (kept between refreshes)."""

    def __init__(self) -> None:
        self.n = self.n_util = 0
        self.first_ns = self.last_ns = 0
        self.power_w = self.util_sum = 0.0
        self.clock: float | None = None


class IdleTracker:
    def __init__(
        self,
        guard_ns: int,
        min_s: float = 30.0,
        bucket_ns: int = 60 * SECOND_NS,
        history_ns: int = 6 * 3600 * SECOND_NS,
        keep_ns: int = 60 * SECOND_NS,
    ) -> None:
        self.guard_ns = guard_ns
        self.min_s = min_s
        self.bucket_ns = bucket_ns
        self.history_ns = history_ns
        self.keep_ns = keep_ns  # raw samples kept for temperature_at
        self.busy = BusyIndex(guard_ns)
        self._pending: deque[IdleSample] = deque()  # not judged yet
        self._kept_ns = -(1 << 62)  # time of the last reading kept for judging
        self._temps: deque[tuple[int, float]] = deque()
        self._acc = _Second()
        self._bucket: list[float] = []  # 1 s averages of the open bucket
        self._bucket_start: int | None = None
        self.history: deque[IdleBucket] = deque()
        self._starts: set[int] = set()  # start_ns of the buckets in history (_hold)
        self._min_clock: float | None = None
        self.idle_power_w: float | None = None  # None: no trustworthy idle yet
        self.measured_ns: int | None = None
        self.new_buckets: list[IdleBucket] = []  # closed since the last take_buckets()

    # -- input -------------------------------------------------------------------------------
    def add_columns(self, times: list[int], values: np.ndarray) -> None:
        """Readings of this device as columns: their times and values[i] = IDLE_COLUMNS (NaN:
        none). Thinned as add() does before any record is built (~1 reading in 4 at 100 Hz)."""
        pick = [i for i, t_ns in enumerate(times) if self._thin(t_ns)]
        for i, row in zip(pick, values[pick].tolist(), strict=True):
            self._keep(IdleRow(times[i], *none_for_nan(row)))

    def add(self, sample: IdleSample) -> None:
        if self._thin(sample.time_ns):
            self._keep(sample)

    def _thin(self, time_ns: int) -> bool:
        """Whether a reading at time_ns is judged (and counts as the last one kept): a 1 s
        average needs no more than ~20 readings."""
        if time_ns - self._kept_ns < IDLE_EVERY_NS:
            return False
        self._kept_ns = time_ns
        return True

    def _keep(self, sample: IdleSample) -> None:
        self._pending.append(sample)
        temps = self._temps  # temperature moves over seconds: one value per 250 ms is plenty
        if sample.temperature_c is not None and (
            not temps or sample.time_ns - temps[-1][0] >= TEMPERATURE_EVERY_NS
        ):
            temps.append((sample.time_ns, sample.temperature_c))

    def busy_start(self, key: object, start_ns: int) -> None:
        self.busy.start(key, start_ns)

    def busy_end(self, key: object, end_ns: int) -> None:
        self.busy.end(key, end_ns)

    def load(self, buckets: list[IdleBucket]) -> None:
        """History from the database (a restart); recomputes the idle power."""
        for b in sorted(buckets, key=lambda b: b.start_ns):
            self._hold(b)
        if self.history:
            self._estimate(self.history[-1].start_ns)

    # -- processing --------------------------------------------------------------------------
    def refresh(self, watermark_ns: int, lag_ns: int) -> bool:
        """Judge the readings the markers are known for; True when the idle power changed."""
        until = watermark_ns - lag_ns - self.guard_ns
        pending = self._pending
        if not pending or pending[0].time_ns > until:
            return False
        changed = False
        state_at, acc = self.busy.state_at, self._acc
        n, first, last, psum = acc.n, acc.first_ns, acc.last_ns, acc.power_w
        usum, nu, clock = acc.util_sum, acc.n_util, acc.clock
        busy, horizon = False, -1  # the busy state holds for readings up to horizon
        while pending and pending[0].time_ns <= until:  # hot: ~50,000 readings/s
            s = pending.popleft()
            t, p = s.time_ns, s.power_w
            if t > horizon:
                busy, horizon = state_at(t)
            if busy or p is None:
                n = 0  # a 1 s average is of consecutive idle readings only
                continue
            if n == 0 or t - last > SECOND_NS:  # a new second, or a hole in the readings
                n, first, psum, usum, nu, clock = 0, t, 0.0, 0.0, 0, None
            n, last, psum = n + 1, t, psum + p
            if (u := s.gpu_util_pct) is not None:
                usum, nu = usum + u, nu + 1
            if (c := s.sm_clock_mhz) is not None and (clock is None or c > clock):
                clock = c
            if n >= 2 and t - first >= SECOND_NS - SECOND_NS // 50:
                changed |= self._second(first, psum / n, usum / nu if nu else None, clock)
                n = 0
        acc.n, acc.first_ns, acc.last_ns, acc.power_w = n, first, last, psum
        acc.util_sum, acc.n_util, acc.clock = usum, nu, clock
        return changed

    def _second(self, start_ns: int, power_w: float, util: float | None, clock: float | None):
        if util is not None and util > IDLE_UTIL_MAX_PCT:
            return False  # busy without markers (another job, an unmarked load)
        if clock is not None:
            if self._min_clock is not None and clock > IDLE_CLOCK_FACTOR * self._min_clock:
                return False
            self._min_clock = clock if self._min_clock is None else min(self._min_clock, clock)
        if self._bucket_start is None or start_ns - self._bucket_start > 2 * self.bucket_ns:
            self._bucket, self._bucket_start = [], start_ns
        self._bucket.append(power_w)
        if len(self._bucket) * SECOND_NS < self.bucket_ns:
            return False
        values = np.array(self._bucket)
        bucket = IdleBucket(
            self._bucket_start,
            len(values),
            float(np.percentile(values, BUCKET_QUANTILE)),
            float(np.median(values)),
        )
        self._bucket, self._bucket_start = [], None
        if not self._hold(bucket):
            return False
        self.new_buckets.append(bucket)
        return self._estimate(start_ns)

    def _hold(self, bucket: IdleBucket) -> bool:
        """Add a bucket to the history unless one starting at the same time is there: the same
        idle seconds judged again (a stream read anew from an older position, after its buckets
        were loaded from the database) would otherwise count twice in the median, and the
        fresh readings outvote the stored history twice as fast. The database keeps one bucket
        per (device, start) as well, so a restart sees the same history."""
        if bucket.start_ns in self._starts:
            return False
        self._starts.add(bucket.start_ns)
        self.history.append(bucket)
        return True

    def _estimate(self, now_ns: int) -> bool:
        while self.history and self.history[0].start_ns < now_ns - self.history_ns:
            self._starts.discard(self.history.popleft().start_ns)
        seconds = sum(b.seconds for b in self.history)
        if seconds < self.min_s:
            return False
        self.idle_power_w = float(np.median([b.low_w for b in self.history]))
        self.measured_ns = now_ns
        return True

    def take_buckets(self) -> list[IdleBucket]:
        out, self.new_buckets = self.new_buckets, []
        return out

    # -- reads -------------------------------------------------------------------------------
    def temperature_at(self, time_ns: int) -> float | None:
        """Temperature of the last reading before time_ns (the run's start temperature)."""
        k = bisect.bisect_left(self._temps, time_ns, key=lambda x: x[0])
        return self._temps[k - 1][1] if k else None

    def trim(self, before_ns: int) -> None:
        while self._temps and self._temps[0][0] < before_ns:
            self._temps.popleft()
        self.busy.trim(min(before_ns, self._pending[0].time_ns if self._pending else before_ns))
