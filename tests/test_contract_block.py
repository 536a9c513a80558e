"""ReadingBlock (parawatt_proto/block.py): the columns the collector's hot path works on."""

from __future__ import annotations

import numpy as np

from collector.store.writebatch import WriteBatch
from parawatt_proto.block import ReadingBlock, as_block
from parawatt_proto.records import ReadingRec


def rec(seq: int, uuid: str, t: int, lost: bool = False, p: float | None = 100.0) -> ReadingRec:
    return ReadingRec(seq, uuid, t, lost, p, None, 5.0 + seq, temperature_c=40.0,
                      power_from_avg=seq % 2 == 1)  # fmt: skip


ROWS = [rec(1, "a", 10), rec(2, "b", 11, p=None), rec(3, "a", 12, lost=True), rec(4, "c", 13),
        rec(5, "b", 14)]  # fmt: skip


def test_rows_round_trip_with_none_as_nan():
    block = ReadingBlock.from_rows(ROWS)
    assert block.rows() == ROWS and len(block) == 5
    assert np.isnan(block.column("power_w")[1]) and block.uuids == ("a", "b", "c")
    assert as_block(block) is block and as_block(ROWS).rows() == ROWS


def test_take_by_device_and_last_per_device():
    block = ReadingBlock.from_rows(ROWS)
    assert [(u, idx.tolist()) for u, idx in block.by_device()] == [
        ("a", [0, 2]), ("b", [1, 4]), ("c", [3]),
    ]  # fmt: skip
    assert block.last_per_device() == {"a": 2, "b": 4, "c": 3}
    assert block.last_per_device(~block.lost) == {"a": 0, "b": 4, "c": 3}
    assert block.take(slice(1, 3)).rows() == ROWS[1:3]
    assert block.take(np.array([4, 0])).rows() == [ROWS[4], ROWS[0]]


def test_concat_merges_device_tables():
    one, two = ReadingBlock.from_rows(ROWS[:2]), ReadingBlock.from_rows(ROWS[2:])
    both = ReadingBlock.concat([one, ReadingBlock.from_rows([]), two])
    assert both.rows() == ROWS and set(both.uuids) == {"a", "b", "c"}
    assert ReadingBlock.concat([]).rows() == []


def test_write_batch_parts_items_and_bounded_backlog_keep_every_reading_once():
    b = WriteBatch()
    b.add_readings("boot-1", ReadingBlock.from_rows(ROWS[:3]))
    b.add_readings("boot-1", ROWS[3:])  # records are taken too
    other = WriteBatch()
    other.add_readings("boot-2", ROWS[:1])
    b.extend(other)
    assert b.reading_count == 6 and b.reading_rows() == ROWS + ROWS[:1]
    parts = b.reading_parts(2)
    assert [p.reading_count for p in parts] == [2, 1, 2, 1]
    assert [r for p in parts for r in p.reading_rows()] == ROWS + ROWS[:1]
    items = b.items()
    assert WriteBatch.of(items).reading_rows() == ROWS + ROWS[:1]
    lost = b.drop_oldest_readings(keep=2)
    assert b.reading_count == 2 and sum(n for _, _, n in lost) == 4
    assert lost[0] == ("boot-1", 1, 2)  # the oldest of the fullest boot first
    assert b.reading_rows() == [ROWS[4], ROWS[0]]
