"""When did a step start and end? Host clock on the CPU, GPU completion time on CUDA.

On the CPU every operation is synchronous, so `time.time_ns()` right after `optimizer.step()`
is the step's end exactly.

On CUDA the host only *launches* work; the kernels finish later. Stamping the host clock would
put the boundary at launch time, and a `torch.cuda.synchronize()` per step would stall the
pipeline. Instead the training thread records a CUDA event (`enable_timing=True`,
`blocking=True`) at each step boundary and enqueues the event itself as the marker's stamp; it
never waits. The marker client's background thread resolves the stamp when it sends:

* if the event has not completed yet, it blocks on it (`event.synchronize()` releases the GIL and,
  with `blocking=True`, sleeps instead of spinning) and reads `time.time_ns()` once it returns:
  an *observation* of the GPU-to-host clock offset. It is late, never early: after the event
  completes the thread must still get the GIL back from a busy training thread (measured p50
  5 ms, max 7.6 ms on a loaded CPU);
* every event's time is then `anchor_ns + anchor.elapsed_time(event)` on the GPU's own clock
  (ms, ~0.5 us resolution), where the anchor is the *least delayed* observation of a sliding
  window (a minimum filter: delays only make observations late, so the smallest is the best).
  The window keeps the anchor recent, so GPU-vs-host clock drift stays negligible.

The residual (how late each observation was against the filtered offset) is reported in
`stats()`, and from there in the run's RUN_END metrics and summary.

The sender thread sets its CUDA device once (`thread_init`) before touching any event, so a
non-zero local rank never creates a CUDA context on GPU 0 from that thread.

No torch import here: the CUDA module is passed in (or imported when a CUDA clock is made).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class HostClock:
    """CPU training: the host clock is exact."""

    cuda = False

    def start(self) -> None:
        pass

    def stamp(self) -> int:
        return time.time_ns()

    def resolve(self, stamp) -> int:
        return int(stamp)

    def thread_init(self) -> None:
        pass

    def stats(self) -> dict[str, float]:
        return {}


class CudaEventClock:
    cuda = True

    def __init__(
        self,
        device_index: int = 0,
        cuda=None,
        now: Callable[[], int] = time.time_ns,
        window: int = 64,
    ):
        if cuda is None:
            import torch

            cuda = torch.cuda
        self._cuda, self._device, self._now = cuda, device_index, now
        self._window: deque = deque(maxlen=window)  # (n, event, host_ns)
        self._best: tuple | None = None
        self._n = 0
        self._residuals: deque = deque(maxlen=4096)  # ns, recent observations

    def thread_init(self) -> None:
        """Sender thread, once: bind it to the training device (no context on GPU 0)."""
        self._cuda.set_device(self._device)

    def start(self) -> None:
        """Once, before training: a first observation on an idle GPU (one sync per run)."""
        event = self.stamp()
        event.synchronize()
        self._observe(event, self._now())

    def stamp(self):
        """Training thread: record an event on the current stream; never blocks."""
        event = self._cuda.Event(enable_timing=True, blocking=True)
        event.record()
        return event

    def resolve(self, event) -> int:
        """Sender thread, events in stream order: the host time at which the GPU reached it."""
        if not event.query():
            event.synchronize()
            self._observe(event, self._now())
        elif self._best is None:  # start() not called: the best available is an upper bound
            self._observe(event, self._now())
        return self._project(self._best, event)

    def _project(self, obs: tuple, event) -> int:
        _, anchor, anchor_ns = obs
        return anchor_ns + round(anchor.elapsed_time(event) * 1e6)

    def _observe(self, event, host_ns: int) -> None:
        obs = (self._n, event, host_ns)
        self._n += 1
        self._window.append(obs)
        best = self._best
        if best is None or host_ns <= self._project(best, event):
            self._best = obs
        elif best[0] <= self._n - 1 - self._window.maxlen:  # aged out: best of the window
            self._best = min(self._window, key=lambda o: self._project(o, event))
        self._residuals.append(host_ns - self._project(self._best, event))

    def stats(self) -> dict[str, float]:
        """Residual of the offset filter: how late observations were (us), and how many."""
        if not self._residuals:
            return {}
        ordered = sorted(self._residuals)
        return {
            "clock_observations": float(self._n),
            "clock_residual_p50_us": ordered[len(ordered) // 2] / 1e3,
            "clock_residual_max_us": ordered[-1] / 1e3,
        }


def clock_for(device_index: int | None, cuda=None) -> HostClock | CudaEventClock:
    """A CUDA clock for a CUDA device index, else the host clock."""
    return HostClock() if device_index is None else CudaEventClock(device_index, cuda)
