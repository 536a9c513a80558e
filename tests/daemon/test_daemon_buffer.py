"""Ring buffer and subscription-start rules (pure)."""

import threading

import pytest

from power_daemon.buffer import RingBuffer, StartPlan, plan_start
from power_daemon.errors import SubscribeError


def fill(buf: RingBuffer, n: int) -> None:
    buf.append(list(range(n)), lambda seq, item: f"{seq}".encode())


def test_seqs_start_at_one_and_read_returns_payloads_in_order():
    buf = RingBuffer(10)
    assert buf.append([], lambda s, i: b"") == 1
    assert buf.append(["a", "b"], lambda seq, item: f"{seq}{item}".encode()) == 3
    assert buf.bounds() == (1, 3)
    assert buf.read(1, 100) == (1, [b"1a", b"2b"])
    assert buf.read(2, 1) == (2, [b"2b"])
    assert buf.read(3, 5) == (3, [])


def test_eviction_moves_first_seq_and_read_skips_lost_items_across_the_wrap():
    buf = RingBuffer(10)
    fill(buf, 25)
    assert buf.bounds() == (16, 26)
    start, payloads = buf.read(3, 100)
    assert start == 16
    assert payloads == [str(s).encode() for s in range(16, 26)]
    start, payloads = buf.read(19, 4)  # crosses the slot wrap (19 % 10 .. 22 % 10)
    assert (start, payloads) == (19, [b"19", b"20", b"21", b"22"])


def test_failed_encoding_leaves_nothing_visible():
    buf = RingBuffer(10)
    fill(buf, 2)

    def bad(seq, item):
        if item == 1:
            raise ValueError("boom")
        return b"x"

    with pytest.raises(ValueError):
        buf.append([0, 1], bad)
    assert buf.bounds() == (1, 3)
    assert buf.read(1, 10)[1] == [b"1", b"2"]


def test_wait_beyond_wakes_on_append_and_on_close():
    buf = RingBuffer(10)
    woke = []
    t = threading.Thread(target=lambda: woke.append(buf.wait_beyond(1, 10.0)))
    t.start()
    fill(buf, 1)
    t.join(10)
    assert woke == [True]
    t = threading.Thread(target=lambda: woke.append(buf.wait_beyond(2, 10.0)))
    t.start()
    buf.close()
    t.join(10)
    assert woke == [True, False]
    assert buf.wait_beyond(1, 0.0) is True  # items already there still count after close


@pytest.mark.parametrize(
    ("from_seq", "their_boot", "expected"),
    [
        (0, "", StartPlan(50, 0, False)),  # oldest, nothing missed
        (0, "B", StartPlan(50, 0, False)),
        (60, "B", StartPlan(60, 0, False)),  # held: exactly from there
        (100, "B", StartPlan(100, 0, False)),  # caught up: next item onwards
        (20, "B", StartPlan(50, 30, False)),  # evicted 20..49
        (20, "", StartPlan(50, 30, False)),
        (70, "A", StartPlan(50, 49, True)),  # other boot: all of this one evicted so far missed
        (500, "", StartPlan(50, 49, True)),  # beyond next_seq, no boot: a restart
    ],
)
def test_plan_start(from_seq, their_boot, expected):
    assert plan_start(from_seq, their_boot, "B", first_seq=50, next_seq=100) == expected


def test_plan_start_beyond_next_seq_of_the_same_boot_is_an_error():
    with pytest.raises(SubscribeError, match="beyond next_seq"):
        plan_start(101, "B", "B", first_seq=50, next_seq=100)
