"""What the join hands the writer: everything one commit stores (merged while the DB is down).

All of a batch goes into one transaction together with the ingest cursors, so after a crash the
database never holds a cursor past data it lacks, and a replay from the cursor duplicates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.records import IdleUpdate, IntervalRec, RankUpdate, SecondAggregate
from parawatt_proto.block import ReadingBlock, as_block
from parawatt_proto.records import MarkerRec, NodeRec, ReadingRec


@dataclass(frozen=True, slots=True)
class GapRec:
    boot_id: str
    kind: str  # missed | boot_changed | dropped
    address: str
    first_seq: int
    items: int
    previous_boot: str | None
    detected_ns: int


@dataclass
class WriteBatch:
    nodes: dict[str, NodeRec] = field(default_factory=dict)  # by boot_id
    # by boot_id, as they came (columns: no object per reading on the hot path)
    readings: dict[str, list[ReadingBlock]] = field(default_factory=dict)
    markers: list[tuple[str | None, MarkerRec]] = field(default_factory=list)  # (boot_id, m)
    intervals: list[IntervalRec] = field(default_factory=list)
    rank_updates: list[RankUpdate] = field(default_factory=list)
    idle_updates: list[IdleUpdate] = field(default_factory=list)
    aggregates: list[SecondAggregate] = field(default_factory=list)
    gaps: list[GapRec] = field(default_factory=list)
    cursors: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # boot -> addr, seq, ns
    reading_count: int = 0

    def add_readings(self, boot_id: str, readings: ReadingBlock | list[ReadingRec]) -> None:
        if len(readings):
            self.readings.setdefault(boot_id, []).append(as_block(readings))
            self.reading_count += len(readings)

    def reading_rows(self) -> list[ReadingRec]:
        """Every reading as a record (tests, diagnostics: not the hot path)."""
        return [r for blocks in self.readings.values() for b in blocks for r in b.rows()]

    def extend(self, other: WriteBatch) -> None:
        self.nodes.update(other.nodes)
        for boot_id, blocks in other.readings.items():
            self.readings.setdefault(boot_id, []).extend(blocks)
        self.reading_count += other.reading_count
        self.markers.extend(other.markers)
        self.intervals.extend(other.intervals)
        self.rank_updates.extend(other.rank_updates)
        self.idle_updates.extend(other.idle_updates)
        self.aggregates.extend(other.aggregates)
        self.gaps.extend(other.gaps)
        self.cursors.update(other.cursors)

    def take_meta(self) -> WriteBatch:
        """Move out everything but readings, aggregates and cursors: the small, urgent part
        (markers, intervals, runs) that should not wait behind a large reading backlog."""
        meta = WriteBatch(nodes=self.nodes, markers=self.markers, intervals=self.intervals,
                          rank_updates=self.rank_updates, idle_updates=self.idle_updates,
                          gaps=self.gaps)  # fmt: skip
        self.nodes, self.markers, self.intervals = {}, [], []
        self.rank_updates, self.idle_updates, self.gaps = [], [], []
        return meta

    def defer_markers(self, max_run_markers: int) -> WriteBatch:
        """Move out the markers past the first `max_run_markers` RUN_START/RUN_END (an upsert
        of run rows each: a flood of them must not hold up every node's readings), with the
        rank updates (their rank rows may be among them) and the cursors (never committed
        past a marker not yet written). The order of the markers is kept."""
        runs, i = 0, 0
        for i, (_, m) in enumerate(self.markers):  # noqa: B007 (i: where the rest begins)
            runs += m.kind.startswith("run_")
            if runs > max_run_markers:
                break
        if runs <= max_run_markers:
            return WriteBatch()
        rest = WriteBatch(markers=self.markers[i:], rank_updates=self.rank_updates,
                          cursors=self.cursors)  # fmt: skip
        self.markers, self.rank_updates, self.cursors = self.markers[:i], [], {}
        return rest

    def reading_parts(self, rows: int) -> list[WriteBatch]:
        """The readings in batches of at most `rows` (aggregates and cursors stay)."""
        parts: list[WriteBatch] = []
        for boot_id, blocks in self.readings.items():
            part = WriteBatch()
            for block in blocks:
                for i in range(0, len(block), rows):
                    piece = block.take(slice(i, i + rows)) if len(block) > rows else block
                    if part.reading_count + len(piece) > rows and part.reading_count:
                        parts.append(part)
                        part = WriteBatch()
                    part.add_readings(boot_id, piece)
            if part.reading_count:
                parts.append(part)
        return parts

    def items(self) -> list[tuple[str, object]]:
        """Every row of the batch as (kind, item), in an order that writes correctly piece by
        piece (nodes before what refers to their boots; cursors last)."""
        out: list[tuple[str, object]] = [("nodes", kv) for kv in self.nodes.items()]
        out += [("markers", m) for m in self.markers]
        for kind in ("intervals", "rank_updates", "idle_updates", "gaps"):
            out += [(kind, x) for x in getattr(self, kind)]
        out += [("readings", (b, block.take(slice(i, i + 1))))
                for b, blocks in self.readings.items() for block in blocks
                for i in range(len(block))]  # fmt: skip
        out += [("aggregates", a) for a in self.aggregates]
        out += [("cursors", kv) for kv in self.cursors.items()]
        return out

    @classmethod
    def of(cls, items: list[tuple[str, object]]) -> WriteBatch:
        """The batch holding exactly these items (see items())."""
        b = cls()
        for kind, x in items:
            if kind == "nodes":
                b.nodes[x[0]] = x[1]
            elif kind == "cursors":
                b.cursors[x[0]] = x[1]
            elif kind == "readings":
                b.add_readings(x[0], x[1])
            else:
                getattr(b, kind).append(x)
        return b

    def drop_oldest_readings(self, keep: int) -> list[tuple[str, int, int]]:
        """Bound the backlog: drop the oldest readings beyond `keep`; returns the lost ranges
        as (boot_id, first_seq, count) so they can be recorded as gaps."""
        lost: list[tuple[str, int, int]] = []
        while self.reading_count > keep:
            boot_id, blocks = max(self.readings.items(), key=lambda kv: sum(map(len, kv[1])))
            held = sum(map(len, blocks))
            n = min(held, self.reading_count - keep, max(1, held // 2))
            lost.append((boot_id, int(blocks[0].seq[0]), n))
            left = n
            while left:
                if len(blocks[0]) <= left:
                    left -= len(blocks.pop(0))
                else:
                    blocks[0] = blocks[0].take(slice(left, None))
                    left = 0
            self.reading_count -= n
            if not blocks:
                del self.readings[boot_id]
        return lost

    def __bool__(self) -> bool:
        return bool(
            self.nodes
            or self.reading_count
            or self.markers
            or self.intervals
            or self.rank_updates
            or self.idle_updates
            or self.aggregates
            or self.gaps
            or self.cursors
        )
