"""Bounded memory under overload: the stream queue holds a bounded number of readings and
markers, and the join waits for a database that is behind (not one that fails)."""

from __future__ import annotations

import time

from collector.metrics.state import LiveState
from collector.pipeline import ChunkQueue
from collector.records import StreamChunk
from collector.store.db import create_db_engine, migrate
from collector.store.store import Store
from collector.store.writebatch import WriteBatch
from collector.store.writer import Writer
from tests.collector.synth import T0, SynthDevice, node


def chunk(readings: int, markers: int = 0) -> StreamChunk:
    dev = SynthDevice("gpu-0")
    return StreamChunk("a:1", "n1", "boot-1", 0, readings, dev.readings(T0, T0 + readings * 20_000_000),
                       [None] * markers)  # fmt: skip


def test_the_queue_is_bounded_in_readings_and_markers():
    q = ChunkQueue(max_chunks=100, max_items=1000)
    assert q.put(chunk(600), timeout_s=0.1)
    assert not q.put(chunk(600), timeout_s=0.1)  # would pass 1,000 items: waits, times out
    assert not q.put(chunk(0, markers=600), timeout_s=0.1)  # markers count alike
    assert q.items == 601 and len(q.get(0).readings) == 600
    assert q.get(0) is None and q.empty()
    assert q.put(chunk(5000), timeout_s=0.1)  # one chunk always fits an empty queue
    assert not q.put(chunk(1), timeout_s=0.05)


def test_readings_left_encoded_count_until_the_join_decodes_them():
    decoded = chunk(600).readings
    calls = []

    def decode():
        calls.append(1)
        return decoded

    encoded = StreamChunk("a:1", "n1", "boot-1", 0, 600, [], [], decode=decode, pending=600)
    q = ChunkQueue(max_chunks=100, max_items=1000)
    assert q.put(encoded, timeout_s=0.1) and not calls  # the subscriber never decodes
    assert not q.put(chunk(600), timeout_s=0.05)  # the encoded 600 weigh like decoded ones
    assert q.items == 601
    assert q.get(0).take_readings() == decoded and calls == [1]


def test_the_writer_says_when_it_is_behind(tmp_path):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'p.db'}")
    migrate(engine)
    dev = SynthDevice("gpu-0")
    n = node("n1", [dev])
    writer = Writer(Store(engine), LiveState(), flush_interval_s=0.05)
    batch = WriteBatch(nodes={n.boot_id: n})
    batch.add_readings(n.boot_id, dev.readings(T0, T0 + 5 * 10**9))  # 250 readings
    writer.submit(batch)
    assert writer.behind(100) and not writer.behind(1000)
    writer.start()
    deadline = time.monotonic() + 30
    while writer.behind(100) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not writer.behind(100) and writer.failures == 0
    writer.close()
    engine.dispose()
