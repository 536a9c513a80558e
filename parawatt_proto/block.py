"""ReadingBlock: many readings as columns (numpy arrays), the form the collector's hot path works
on. Built from the stream's ReadingColumns (parawatt_proto/convert.py reading_block), or from
ReadingRecs (from_rows: the database on a replay, tests, a daemon that streams rows).

At 50,000+ readings/s a Python object per reading is most of a collector's cost (a ReadingRec
costs ~1.5 us to build, more than all the column work of a reading): the collector's writer,
aggregation, join and live metrics take columns, and rows are built only where a consumer keeps
a few (the newest reading of a device, the thinned idle samples). NaN stands for a value the
reading does not have (ReadingRec's None).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from parawatt_proto.fields import READING_FIELDS
from parawatt_proto.records import ReadingRec

FLOAT_INDEX = {name: i for i, name in enumerate(READING_FIELDS)}
_FLOATS = operator.attrgetter(*READING_FIELDS)  # one C call a reading
_EMPTY_I = np.empty(0, np.int64)


@dataclass(frozen=True, slots=True, eq=False)
class ReadingBlock:
    """n readings: `dev[i]` indexes `uuids`; `values[i, k]` is READING_FIELDS[k] (NaN: unset).
    In arrival order; never mutated (take() and the slices copy or view)."""

    uuids: tuple[str, ...]
    dev: np.ndarray  # intp, n
    seq: np.ndarray  # int64, n
    time_ns: np.ndarray  # int64, n
    lost: np.ndarray  # bool, n
    values: np.ndarray  # float64, n x len(READING_FIELDS)
    power_from_avg: np.ndarray  # bool, n

    def __len__(self) -> int:
        return len(self.seq)

    def column(self, name: str) -> np.ndarray:
        return self.values[:, FLOAT_INDEX[name]]

    def take(self, idx) -> ReadingBlock:
        """The readings at idx (indices, a slice or a boolean mask), in that order."""
        return ReadingBlock(self.uuids, self.dev[idx], self.seq[idx], self.time_ns[idx],
                            self.lost[idx], self.values[idx], self.power_from_avg[idx])  # fmt: skip

    def row(self, i: int) -> ReadingRec:
        return ReadingRec(
            int(self.seq[i]), self.uuids[self.dev[i]], int(self.time_ns[i]), bool(self.lost[i]),
            *none_for_nan(self.values[i].tolist()), bool(self.power_from_avg[i]),
        )  # fmt: skip

    def rows(self) -> list[ReadingRec]:
        return [self.row(i) for i in range(len(self))]

    def by_device(self) -> list[tuple[str, np.ndarray]]:
        """(uuid, indices of its readings in arrival order) per device present."""
        if not len(self):
            return []
        if len(self.uuids) == 1:
            return [(self.uuids[0], np.arange(len(self)))]
        order = np.argsort(self.dev, kind="stable")
        d = self.dev[order]
        cuts = np.flatnonzero(d[1:] != d[:-1]) + 1
        return [(self.uuids[int(d[part[0]])], order[part[0] : part[-1] + 1])
                for part in np.split(np.arange(len(d)), cuts)]  # fmt: skip

    def last_per_device(self, mask: np.ndarray | None = None) -> dict[str, int]:
        """uuid -> index of its last reading (among `mask`)."""
        idx = np.arange(len(self)) if mask is None else np.flatnonzero(mask)
        if not len(idx):
            return {}
        rev = idx[::-1]
        uniq, first = np.unique(self.dev[rev], return_index=True)
        return {self.uuids[int(u)]: int(rev[f]) for u, f in zip(uniq, first, strict=True)}

    @classmethod
    def from_rows(cls, rows: Sequence[ReadingRec]) -> ReadingBlock:
        rows = rows if isinstance(rows, list) else list(rows)
        index: dict[str, int] = {}
        dev = [index.setdefault(r.device_uuid, len(index)) for r in rows]
        values = np.array(list(map(_FLOATS, rows)), dtype=float).reshape(
            len(rows), len(READING_FIELDS)
        )  # None -> nan
        return cls(
            tuple(index), np.array(dev, dtype=np.intp), np.array([r.seq for r in rows], np.int64),
            np.array([r.time_ns for r in rows], np.int64), np.array([r.lost for r in rows], bool),
            values, np.array([r.power_from_avg for r in rows], bool),
        )  # fmt: skip

    @classmethod
    def concat(cls, blocks: Iterable[ReadingBlock]) -> ReadingBlock:
        blocks = [b for b in blocks if len(b)]
        if len(blocks) == 1:
            return blocks[0]
        if not blocks:
            return EMPTY
        index: dict[str, int] = {}
        devs = []
        for b in blocks:
            remap = np.array([index.setdefault(u, len(index)) for u in b.uuids], np.intp)
            devs.append(remap[b.dev])
        return cls(
            tuple(index), np.concatenate(devs), np.concatenate([b.seq for b in blocks]),
            np.concatenate([b.time_ns for b in blocks]),
            np.concatenate([b.lost for b in blocks]),
            np.concatenate([b.values for b in blocks]),
            np.concatenate([b.power_from_avg for b in blocks]),
        )  # fmt: skip


EMPTY = ReadingBlock((), np.empty(0, np.intp), _EMPTY_I, _EMPTY_I, np.empty(0, bool),
                     np.empty((0, len(READING_FIELDS))), np.empty(0, bool))  # fmt: skip


def none_for_nan(values: list[float]) -> list[float | None]:
    """A column's or a row's values with NaN (a value the reading does not have) as None."""
    return [None if v != v else v for v in values]


def as_block(readings: ReadingBlock | Sequence[ReadingRec]) -> ReadingBlock:
    """Either form in, a block out (rows from the database, tests, a row-streaming daemon)."""
    return readings if isinstance(readings, ReadingBlock) else ReadingBlock.from_rows(readings)
