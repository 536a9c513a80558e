"""Bounded, sequence-numbered ring buffer of encoded items (readings and markers share it).

Items are opaque payloads (the gRPC adapter stores ready-to-send protobuf bytes, so streaming
costs no per-reading Python work). Sequence numbers start at 1 so that 0 can mean "the oldest"
in a subscription request. Followers block on a condition variable until new items arrive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from power_daemon.errors import SubscribeError

T = TypeVar("T")


class RingBuffer:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._slots: list[bytes | None] = [None] * capacity
        self._next_seq = 1
        self._closed = False
        self._cond = threading.Condition()

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def first_seq(self) -> int:
        return max(1, self._next_seq - self.capacity)

    @property
    def closed(self) -> bool:
        return self._closed

    def bounds(self) -> tuple[int, int]:
        """[first_seq, next_seq) held now, read consistently."""
        with self._cond:
            return self.first_seq, self._next_seq

    def append(self, items: Sequence[T], encode: Callable[[int, T], bytes]) -> int:
        """Give each item the next seq, store encode(seq, item); returns the new next_seq.

        Encoding happens under the lock so seqs are assigned and stored atomically; if encoding
        fails, nothing of this call becomes visible.
        """
        if not items:
            return self._next_seq
        with self._cond:
            seq = self._next_seq
            payloads = [encode(seq + i, item) for i, item in enumerate(items)]
            for payload in payloads:
                self._slots[seq % self.capacity] = payload
                seq += 1
            self._next_seq = seq
            self._cond.notify_all()
            return seq

    def read(self, from_seq: int, max_items: int) -> tuple[int, list[bytes]]:
        """Up to max_items payloads from from_seq on -> (start_seq, payloads).

        start_seq > from_seq when the items in between were already evicted.
        """
        with self._cond:
            start = max(from_seq, self.first_seq)
            end = min(self._next_seq, start + max_items)
            if end <= start:
                return start, []
            a, b = start % self.capacity, end % self.capacity
            if a < b:
                return start, self._slots[a:b]  # type: ignore[return-value]
            return start, self._slots[a:] + self._slots[:b]  # type: ignore[operator]

    def wait_beyond(self, seq: int, timeout_s: float) -> bool:
        """Block until an item with seq >= `seq` exists (True) or close/timeout/wake (False)."""
        with self._cond:
            if self._next_seq > seq:
                return True
            if self._closed:
                return False
            self._cond.wait(timeout_s)
            return self._next_seq > seq

    def wait_until(self, seq: int, timeout_s: float) -> bool:
        """Like wait_beyond, but keeps waiting through other wake-ups until the deadline."""
        with self._cond:
            return self._cond.wait_for(lambda: self._next_seq > seq or self._closed, timeout_s)

    def wake(self) -> None:
        """Wake every follower (e.g. because one of their clients went away)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass(frozen=True, slots=True)
class StartPlan:
    start_seq: int
    missed: int
    boot_changed: bool


def plan_start(
    from_seq: int, their_boot: str, boot_id: str, first_seq: int, next_seq: int
) -> StartPlan:
    """Where a subscription starts and how much of what it asked for is gone for good.

    - different (non-empty) boot: their seq refers to a dead buffer; start at the oldest item,
      and count what this boot already evicted as missed;
    - from_seq 0: start at the oldest item, nothing missed;
    - from_seq older than the oldest item: start there, missed = the evicted gap;
    - from_seq beyond next_seq with no boot given: most likely a restart the client cannot
      tell us about, treated as a boot change; with the current boot given it is a client bug.
    """
    if their_boot and their_boot != boot_id:
        return StartPlan(first_seq, first_seq - 1, True)
    if from_seq == 0:
        return StartPlan(first_seq, 0, False)
    if from_seq > next_seq:
        if their_boot:
            raise SubscribeError(f"from_seq {from_seq} is beyond next_seq {next_seq} of this boot")
        return StartPlan(first_seq, first_seq - 1, True)
    if from_seq < first_seq:
        return StartPlan(first_seq, first_seq - from_seq, False)
    return StartPlan(from_seq, 0, False)
