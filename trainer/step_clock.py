"""When did a step start and end? Host clock on the CPU, GPU completion time on CUDA.

On the CPU every operation is synchronous, so `time.time_ns()` right after `optimizer.step()`
is the step's end exactly.

On CUDA the host only *launches* work; the kernels finish later. Stamping the host clock would
put the boundary at launch time, and a `torch.cuda.synchronize()` per step would stall the
pipeline. Instead the training thread records a CUDA event (`enable_timing=True`,
`blocking=True`) at each step boundary and enqueues the event itself as the marker's stamp; it
never waits. The marker client's background thread resolves the stamp when it sends:

* if the event has not completed yet, it blocks on it (`event.synchronize()` releases the GIL and,
  with `blocking=True`, sleeps instead of spinning) and stamps `time.time_ns()` the moment the GPU
  reaches it. That observation becomes the *anchor*;
* if the event had already completed (the thread was busy sending, or asleep between flushes),
  the time is derived from the anchor on the GPU's own clock:
  `anchor_time_ns + anchor_event.elapsed_time(event)` (ms, ~0.5 us resolution).

So every step boundary is the time its GPU work finished (start: when the GPU reached the step's
first kernel, i.e. the previous step's work drained), on the host wall clock the daemon's
readings use, without any sync in the training thread. Anchors refresh whenever the sender
catches up with the GPU, which keeps GPU-vs-host clock drift negligible.
"""

from __future__ import annotations

import time

import torch


class HostClock:
    """CPU training: the host clock is exact."""

    def start(self) -> None:
        pass

    def stamp(self) -> int:
        return time.time_ns()

    def resolve(self, stamp) -> int:
        return int(stamp)


class CudaEventClock:
    def __init__(self):
        self._anchor: tuple[torch.cuda.Event, int] | None = None

    def start(self) -> None:
        """Once, before training: a first anchor taken on an idle GPU (one sync per run)."""
        event = torch.cuda.Event(enable_timing=True, blocking=True)
        event.record()
        event.synchronize()
        self._anchor = (event, time.time_ns())

    def stamp(self) -> torch.cuda.Event:
        """Training thread: record an event on the current stream; never blocks."""
        event = torch.cuda.Event(enable_timing=True, blocking=True)
        event.record()
        return event

    def resolve(self, event: torch.cuda.Event) -> int:
        """Sender thread, events in stream order: the host time at which the GPU reached it."""
        if not event.query():
            event.synchronize()
            now = time.time_ns()
            self._anchor = (event, now)
            return now
        if self._anchor is None:  # start() not called: the best available is an upper bound
            now = time.time_ns()
            self._anchor = (event, now)
            return now
        anchor_event, anchor_ns = self._anchor
        return anchor_ns + round(anchor_event.elapsed_time(event) * 1e6)


def clock_for(device: torch.device) -> HostClock | CudaEventClock:
    return CudaEventClock() if device.type == "cuda" else HostClock()
