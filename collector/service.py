"""create_collector(config) -> Collector: subscribers, join, writer and /metrics wired together.

Start-up migrates the schema, rebuilds the join's open state from the database (see
store_reads), then resumes every daemon's stream from its stored cursor. close() (also on
SIGTERM through the CLI) stops the streams, drains the join and flushes the writer.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from sqlalchemy import Engine

from collector.config import CollectorConfig
from collector.errors import StoreError
from collector.ingest.discovery import InventoryWatcher, Shard, open_inventory
from collector.ingest.subscriber import Subscriber
from collector.join.joiner import JoinConfig, Joiner
from collector.metrics.exporter import MetricsServer, create_metrics_server
from collector.metrics.state import LiveState
from collector.ownership import OwnershipGate
from collector.pipeline import Pipeline
from collector.rebuild import load_idle, restore_nodes, write_to
from collector.store import reads as store_reads
from collector.store.aggregate import SecondAggregator
from collector.store.db import create_db_engine, migrate_when_ready
from collector.store.store import Store
from collector.store.writebatch import WriteBatch
from collector.store.writer import Writer
from parawatt_proto.records import NodeRec

log = logging.getLogger(__name__)


def join_config(c: CollectorConfig) -> JoinConfig:
    ns = lambda s: int(s * 1e9)  # noqa: E731
    return JoinConfig(
        late_bound_ns=ns(c.late_bound_s), chunk_ns=ns(c.chunk_s),
        max_gap_ns=None if c.max_gap_s is None else ns(c.max_gap_s),
        idle_window_ns=ns(c.idle_window_s), idle_guard_ns=ns(c.idle_guard_s),
        idle_update_ns=ns(c.idle_update_s), idle_min_s=c.idle_min_s,
        idle_bucket_ns=ns(c.idle_bucket_s), idle_history_ns=ns(c.idle_history_s),
        max_open=c.max_open_intervals,
    )  # fmt: skip


class Collector:
    def __init__(self, config: CollectorConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine if engine is not None else create_db_engine(config.db_url)
        self.live = LiveState(config.max_run_series, config.run_silent_s)
        self.store = Store(self.engine, config.write_chunk_rows)
        self.joiner = Joiner(join_config(config))
        self.writer = Writer(
            self.store, self.live, config.flush_interval_s, config.max_backlog_readings,
            config.db_retry_backoff_s, config.retention_s, config.retention_check_s,
        )  # fmt: skip
        self.pipeline: Pipeline | None = None
        self._subs: dict[str, Subscriber] = {}  # by daemon address
        self._subs_lock = threading.Lock()
        self._announce = False
        self.inventory: InventoryWatcher | None = None
        self.shard = Shard(*config.shard)
        self.metrics_server: MetricsServer | None = None
        self.metrics_port: int | None = None
        self._started = self._closed = False

    def start(
        self, stop: threading.Event | None = None, targets: tuple[str, ...] = ()
    ) -> Collector:
        """Migrate, rebuild, then serve; raises StoreError/ConfigError when it cannot start.
        A database not reachable yet is retried for db_start_timeout_s (or until `stop`).
        `targets`: daemons to read besides the configured ones (a worker's share)."""
        # Six threads share the GIL (ingest per daemon, join, writer); at 50,000 readings/s the
        # default 5 ms hand-over starves the writer between its statements. 1 ms keeps it fed.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        c = self.config
        self.inventory, found = open_inventory(c.daemons_file, self.set_daemons, c.inventory_poll_s)
        listed = [*c.daemons, *targets, *found]
        migrate_when_ready(self.engine, stop or threading.Event(), c.db_start_timeout_s,
                           c.db_retry_backoff_s)  # fmt: skip
        aggregator = self._rebuild(self._own(listed))
        self.pipeline = Pipeline(self.joiner, aggregator, self.live, self.writer,
                                 c.queue_batches, run_grace_s=c.run_label_grace_s,
                                 max_items=c.queue_items,
                                 max_unwritten=c.max_unwritten_readings,
                                 gate=OwnershipGate(lambda ids: store_reads.run_owners(
                                     self.engine, ids), self.live))  # fmt: skip
        self.pipeline.on_new_node = self._load_idle
        if c.metrics_listen is not None:
            self.metrics_server, self.metrics_port = create_metrics_server(
                self.live, c.metrics_listen, web_config=c.metrics_web_config
            )
        self.writer.start()
        self.pipeline.start()
        self._started = True
        self.set_daemons(listed)
        self._announce = True  # changes from now on are logged (the start is, below)
        if self.inventory is not None:
            self.inventory.start()
        log.info(
            "collecting from %s into %s",
            ", ".join(s.address for s in self.subscribers) or "(no daemons yet)",
            self.engine.url.render_as_string(hide_password=True),
        )
        return self

    @property
    def subscribers(self) -> list[Subscriber]:
        with self._subs_lock:
            return list(self._subs.values())

    def _own(self, addresses: list[str]) -> list[str]:
        """This collector's shard of the daemons (all of them without --shard)."""
        return [a for a in dict.fromkeys(addresses) if self.shard.owns(a)]

    def set_daemons(self, addresses: list[str], with_configured: bool = True) -> None:
        """Subscribe to these daemons (this collector's shard of them) and to no others: the
        --daemon list (unless with_configured is False) plus the inventory, live. A daemon
        dropped lets its node go; one added while running is taken over (_adopt)."""
        if not self._started or self._closed or self.pipeline is None:
            return
        wanted = self._own([*(self.config.daemons if with_configured else ()), *addresses])
        with self._subs_lock:
            released = []
            for address in [a for a in self._subs if a not in wanted]:
                sub = self._subs.pop(address)
                sub.close()
                if sub.health in self.live.daemons:
                    self.live.daemons.remove(sub.health)
                if sub.health.hostname:
                    released.append(sub.health.hostname)
                log.info("unsubscribed from daemon %s", address)
            added = []
            for address in [a for a in wanted if a not in self._subs]:
                c = self.config
                # at start-up the join state is rebuilt already: resume from the stored cursor
                cursor = None if self._announce else self._cursor(address)
                sub = Subscriber(address, self.pipeline.put, cursor, c.subscribe_max_batch,
                                 c.reconnect_backoff_s, tls=c.tls)  # fmt: skip
                self._subs[address] = sub
                self.live.daemons.append(sub.health)
                added.append(sub)
        for hostname in released:
            self.pipeline.call(lambda batch, h=hostname: self._release(h, batch))
        for sub in added:
            if not self._announce:
                sub.start()
                continue
            self.pipeline.call(lambda batch, s=sub: self._adopt(s, batch))
            log.info("subscribed to daemon %s", sub.address)

    def _cursor(self, address: str) -> tuple[str, int] | None:
        try:
            return store_reads.cursor_for(self.engine, address)
        except StoreError as exc:  # the daemon's buffer from its start: replays are harmless
            log.warning("daemon %s: no stored position (%s); reading its whole buffer", address,
                        exc)  # fmt: skip
            return None

    def _rebuild(self, daemons: list[str]) -> SecondAggregator:
        """Restore the join's open state from the database (nothing to do on a fresh one), for
        the nodes of these daemons only (collector/rebuild.py)."""
        engine = self.engine
        aggregator = SecondAggregator(store_reads.aggregated_until(engine))
        hosts = store_reads.hostnames_of(engine, daemons)
        done = restore_nodes(engine, self.config, self.joiner, self.live, aggregator, hosts,
                             write_to(self.store))  # fmt: skip
        if done.markers or done.readings:
            log.info("rebuilt join state: %d open markers, %d readings replayed in %.1f s",
                     done.markers, done.readings, done.seconds)  # fmt: skip
        return aggregator

    def _load_idle(self, node: NodeRec) -> None:
        """In the join thread, for a node first seen on its stream (not restored: its daemon
        came back on another address): its devices' idle history from the database."""
        try:
            load_idle(self.engine, self.config, self.joiner, self.live,
                      [d.uuid for d in node.devices])  # fmt: skip
        except StoreError as exc:
            log.warning("node %s: its idle history could not be read (%s); its idle power is "
                        "learnt anew", node.hostname, exc)  # fmt: skip

    def _adopt(self, sub: Subscriber, batch: WriteBatch) -> None:
        """In the join thread, before the daemon's first chunk: take its node over from whoever
        read it before (another collector, a worker, this one earlier) by restoring the node's
        open intervals from the database, then start streaming from the stored cursor. The
        cursor is read first: whatever is committed after it comes again on the stream."""
        if sub.closed or self._closed:
            return
        pipeline = self.pipeline
        try:
            cursor = store_reads.cursor_for(self.engine, sub.address)
            hosts = store_reads.hostnames_of(self.engine, [sub.address])
            known = set(self.joiner.node_names())
            hosts = [h for h in hosts if h not in known]

            def emit(out, aggregates) -> None:
                pipeline.apply(out, batch)
                batch.aggregates.extend(aggregates)

            done = restore_nodes(self.engine, self.config, self.joiner, self.live,
                                 pipeline.aggregator, hosts, emit,
                                 stop_at=dict([cursor]) if cursor else None)  # fmt: skip
            if done.markers or done.readings:
                log.info("took over %s (%s): %d open markers, %d readings replayed in %.1f s",
                         sub.address, ", ".join(hosts), done.markers, done.readings,
                         done.seconds)  # fmt: skip
        except StoreError as exc:
            cursor = None
            log.warning("daemon %s: its node's open intervals could not be restored (%s); "
                        "intervals open at the takeover will be missing", sub.address, exc)  # fmt: skip
        if cursor is not None:
            sub.boot_id, sub.next_seq = cursor
        sub.start()

    def _release(self, hostname: str, batch: WriteBatch) -> None:
        """In the join thread, after the daemon's last chunk: forget its node (whoever reads
        the daemon next rebuilds the open intervals from the database)."""
        if any(s.health.hostname == hostname for s in self.subscribers):
            return  # another address of the same node is still read here
        uuids = self.joiner.forget_node(hostname)
        self.pipeline.aggregator.forget(uuids)
        self.live.forget_devices(uuids)
        log.info("let go of node %s (%d devices)", hostname, len(uuids))

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything received so far is joined and written (tests, benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pipeline is None or (self.pipeline.idle.is_set() and self.writer.idle()):
                time.sleep(self.config.flush_interval_s)
                if self.pipeline is None or (self.pipeline.idle.is_set() and self.writer.idle()):
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        """Stop the streams, join what was received, write everything, release the database."""
        if self._closed:
            return
        self._closed = True
        if self.inventory is not None:
            self.inventory.close()
        with self._subs_lock:
            subs = list(self._subs.values())
        for sub in subs:
            sub.close()
        if self.pipeline is not None:
            self.pipeline.close()
        if self._started:
            self.writer.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        self.engine.dispose()

    def __enter__(self) -> Collector:
        return self if self._started else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_collector(config: CollectorConfig, engine: Engine | None = None) -> Collector:
    """Build (not start) a collector; `with create_collector(cfg) as c:` starts and closes it."""
    return Collector(config, engine)
