"""Drift-free periodic sampler: ticks on an absolute schedule start + k * interval.

Sleeping "interval" after each tick would accumulate the tick's own run time as drift; an
absolute schedule keeps the long-run rate exact. A tick that overruns skips the deadlines it
missed instead of bursting to catch up (a burst would only produce readings at the wrong times).

Under CPU contention (training ranks on every core) the sampler thread is late when the OS
does not run it or when another thread holds the GIL. `nice` < 0 raises the thread's own
priority (Linux: per thread; needs CAP_SYS_NICE or root, else it stays as it is and says so
once); `realtime` puts it under SCHED_FIFO (the OS runs it as soon as it wakes; the GIL it
then waits for is the remaining delay). The CLI also shortens the interpreter's GIL switch
interval so a thread encoding a stream batch hands the GIL over sooner (bench/bench_daemon.py --only holes measures both).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def next_deadline(prev_deadline_ns: int, interval_ns: int, now_ns: int) -> int:
    """The first deadline on the grid prev + k * interval (k >= 1) that is not before now."""
    nxt = prev_deadline_ns + interval_ns
    if nxt >= now_ns:
        return nxt
    behind = -((nxt - now_ns) // interval_ns)  # ceil((now - nxt) / interval)
    return nxt + behind * interval_ns


class Sampler:
    def __init__(
        self,
        interval_ns: int,
        tick: Callable[[], None],
        name: str = "sampler",
        nice: int = 0,
        realtime: bool = False,
    ) -> None:
        self.interval_ns = interval_ns
        self.nice = nice
        self.realtime = realtime
        self.policy: str = "default"  # what the thread got: default | nice N | fifo
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._tick_now = True
        self.skipped_ticks = 0
        self.failed_ticks = 0

    def start(self, tick_now: bool = True) -> None:
        """Start ticking; tick_now=False when the caller just took a tick itself."""
        self._tick_now = tick_now
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _raise_priority(self) -> None:
        tid = threading.get_native_id()
        if self.realtime and hasattr(os, "sched_setscheduler"):
            try:  # Linux: a thread id is a pid here
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(1))
                self.policy = "fifo"
                log.info("sampler thread runs under SCHED_FIFO (priority 1)")
                return
            except OSError as e:
                log.info("sampler not real-time (%s; allow it with an RLIMIT_RTPRIO of 1, e.g. "
                         "systemd LimitRTPRIO=1, or CAP_SYS_NICE); trying nice",
                         e.strerror or e)  # fmt: skip
        if not self.nice or not hasattr(os, "setpriority"):
            return
        try:
            os.setpriority(os.PRIO_PROCESS, tid, self.nice)
            self.policy = f"nice {self.nice}"
            log.info("sampler thread runs at nice %d", self.nice)
        except OSError as e:
            log.info("sampler priority unchanged (nice %d: %s; grant CAP_SYS_NICE to raise it)",
                     self.nice, e.strerror or e)  # fmt: skip

    def _run(self) -> None:
        self._raise_priority()
        deadline = time.monotonic_ns()
        if not self._tick_now:
            deadline += self.interval_ns
            self._stop.wait(self.interval_ns / 1e9)
        while not self._stop.is_set():
            self._safe_tick()
            now = time.monotonic_ns()
            nxt = next_deadline(deadline, self.interval_ns, now)
            self.skipped_ticks += (nxt - deadline) // self.interval_ns - 1
            deadline = nxt
            self._stop.wait((deadline - now) / 1e9)

    def _safe_tick(self) -> None:
        # The sampler must outlive any backend hiccup: log (rarely) and carry on.
        try:
            self._tick()
        except Exception:
            self.failed_ticks += 1
            if self.failed_ticks in (1, 10, 100) or self.failed_ticks % 1000 == 0:
                log.exception("sampler tick failed (%d so far)", self.failed_ticks)
