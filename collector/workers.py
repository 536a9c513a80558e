"""`collector serve --workers N`: one collector as N processes, each a whole collector
(ingest, join, writer) for its share of the daemons, all writing to the same database.

Why processes: a collector is CPU-bound in Python (decode, join, SQL rows: ~15 us a reading) and
threads share one core under the GIL. The join is per node and run-level results are sums in
SQL, so a node's daemon can be read by any process: the parent routes each daemon to a worker by
rendezvous hashing with bounded loads (even shares however few daemons; a change moves few),
watches the inventory, and serves one /metrics that merges the workers' (counters and histograms add up, so
a run spread over workers shows its total). Workers are started with "spawn" (gRPC is not
fork-safe), stop when told or when the parent goes away, and flush before they exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from collector.config import CollectorConfig
from collector.errors import CollectorError, ConfigError, StoreError
from collector.ingest.discovery import InventoryWatcher, Shard, balanced_shards, open_inventory
from collector.store.db import create_db_engine, describe, migrate_when_ready

log = logging.getLogger(__name__)

_MAX_GAUGES = ("parawatt_run_epoch", "parawatt_run_step", "parawatt_run_active")


class _Worker:
    def __init__(self, index: int, process, conn) -> None:
        self.index, self.process, self.conn = index, process, conn
        self.lock = threading.Lock()
        self.stats: dict = {}
        self.metrics_port: int | None = None
        self.replies: list = []
        self.replied = threading.Condition()

    def send(self, msg: tuple) -> None:
        # a worker that is gone raises here: its exit is reported by close()
        with self.lock, contextlib.suppress(OSError, ValueError):
            self.conn.send(msg)


class WorkerPool:
    """What Collector is for one process, for N: start(), set_daemons(), flush(), close()."""

    def __init__(self, config: CollectorConfig, workers: int) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.config, self.n = config, workers
        self.shard = Shard(*config.shard)
        self.workers: list[_Worker] = []
        self.inventory: InventoryWatcher | None = None
        self.metrics_server = None
        self.metrics_port: int | None = None
        self.engine = create_db_engine(config.db_url)
        self._closed = False
        self._readers: list[threading.Thread] = []

    # -- life cycle ----------------------------------------------------------------------------
    def start(self, stop: threading.Event | None = None) -> WorkerPool:
        c = self.config
        self.inventory, found = open_inventory(c.daemons_file, self.set_daemons, c.inventory_poll_s)
        listed = [*c.daemons, *found]
        # Once here, so the workers never race to create the schema (SQLite cannot lock it).
        migrate_when_ready(self.engine, stop or threading.Event(), c.db_start_timeout_s,
                           c.db_retry_backoff_s)  # fmt: skip
        ctx = multiprocessing.get_context("spawn")
        routed = self._route(listed)
        for k in range(self.n):
            wcfg = dataclasses.replace(
                c, daemons=(), daemons_file=None, shard=(1, 1),
                metrics_listen="127.0.0.1:0" if c.metrics_listen is not None else None,
                metrics_web_config=None,  # private, merged below; the public one has the config
            )  # fmt: skip
            parent_conn, child_conn = ctx.Pipe()
            proc = ctx.Process(target=worker_main, name=f"collector-worker-{k + 1}",
                               args=(wcfg, tuple(routed[k]), child_conn,
                                     logging.getLogger().level))  # fmt: skip
            proc.start()
            child_conn.close()
            self.workers.append(_Worker(k, proc, parent_conn))
        try:
            for w in self.workers:
                self._await_ready(w, stop)
        except BaseException:
            self.close()
            raise
        for w in self.workers:
            t = threading.Thread(target=self._read, args=(w,), name=f"worker-{w.index}-reader",
                                 daemon=True)  # fmt: skip
            t.start()
            self._readers.append(t)
        if c.metrics_listen is not None:
            from collector.metrics.exporter import create_metrics_server

            self.metrics_server, self.metrics_port = create_metrics_server(
                None,
                c.metrics_listen,
                collector=_MergedMetrics(self.workers),
                web_config=c.metrics_web_config,
            )
        if self.inventory is not None:
            self.inventory.start()
        log.info("%d workers collecting from %d daemons into %s", self.n,
                 sum(map(len, routed)), describe(self.engine))  # fmt: skip
        return self

    def _await_ready(self, w: _Worker, stop: threading.Event | None) -> None:
        while not w.conn.poll(0.2):
            if not w.process.is_alive():
                raise StoreError(f"collector worker {w.index + 1} exited at start-up")
            if stop is not None and stop.is_set():
                raise StoreError("stopped during start-up")
        kind, value = w.conn.recv()
        if kind == "error":
            raise (ConfigError if value.startswith("config: ") else StoreError)(
                value.removeprefix("config: ")
            )
        w.metrics_port = value

    def _read(self, w: _Worker) -> None:
        while True:
            try:
                kind, value = w.conn.recv()
            except (EOFError, OSError):
                return
            if kind == "stats":
                w.stats = value
            else:
                with w.replied:
                    w.replies.append(value)
                    w.replied.notify_all()

    def _route(self, addresses: list[str]) -> list[list[str]]:
        routed: list[list[str]] = [[] for _ in range(self.n)]
        owned = [a for a in dict.fromkeys(addresses) if self.shard.owns(a)]
        worker_of = balanced_shards(owned, self.n)
        for a in owned:
            routed[worker_of[a]].append(a)
        return routed

    def set_daemons(self, addresses: list[str]) -> None:
        """The --daemon list plus these (the inventory), this collector's shard of them, each
        to its worker; a worker subscribes to what it is given and drops the rest."""
        for w, targets in zip(self.workers, self._route([*self.config.daemons, *addresses]),
                              strict=True):  # fmt: skip
            w.send(("targets", targets))

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Every worker has joined and written what it received (tests, benchmarks)."""
        results = []
        for w in self.workers:
            with w.replied:
                w.replies.clear()
            w.send(("flush", timeout_s))
        deadline = time.monotonic() + timeout_s + 5
        for w in self.workers:
            with w.replied:
                w.replied.wait_for(lambda w=w: w.replies, max(0.0, deadline - time.monotonic()))
                results.append(bool(w.replies and w.replies[0]))
        return all(results)

    def stats(self) -> dict:
        """Sums over the workers of what each reported last (about once a second)."""
        out: dict = {"last_reading_ns": [], "rss_bytes": _rss_bytes()}  # parent's own, + workers'
        for w in self.workers:
            for k, v in w.stats.items():
                out[k] = out.get(k, 0) + v if not isinstance(v, list) else out.get(k, []) + v
        return out

    def close(self, timeout_s: float = 60.0) -> None:
        if self._closed:
            return
        self._closed = True
        if self.inventory is not None:
            self.inventory.close()
        for w in self.workers:
            w.send(("stop", None))
        deadline = time.monotonic() + timeout_s
        for w in self.workers:
            w.process.join(max(0.1, deadline - time.monotonic()))
            if w.process.is_alive():
                log.error("collector worker %d did not stop in time: terminating it", w.index + 1)
                w.process.terminate()
                w.process.join(5)
            w.conn.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        self.engine.dispose()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the worker process --------------------------------------------------------------------------
def worker_main(config: CollectorConfig, targets: tuple[str, ...], conn, log_level: int) -> None:
    """One worker: a whole collector for the daemons the parent routes to it."""
    from collector.service import create_collector

    logging.basicConfig(level=log_level or logging.INFO,
                        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # the parent tells us; a SIGTERM to all: flush
        signal.signal(sig, lambda *_: stop.set())
    collector = create_collector(config)
    try:
        collector.start(stop, targets)
    except CollectorError as exc:
        prefix = "config: " if isinstance(exc, ConfigError) else ""
        conn.send(("error", f"{prefix}{exc}"))
        collector.close()
        return
    conn.send(("ready", collector.metrics_port))
    next_stats = 0.0
    try:
        while not stop.is_set():
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + 1.0
                conn.send(("stats", _worker_stats(collector)))
            if not conn.poll(0.2):
                continue
            kind, value = conn.recv()
            if kind == "targets":
                collector.set_daemons(value, with_configured=False)
            elif kind == "flush":
                conn.send(("flushed", collector.flush(value)))
            elif kind == "stop":
                break
    except (EOFError, OSError):
        log.warning("collector parent went away: stopping")
    finally:
        collector.close()


def _worker_stats(c) -> dict:
    live = c.live
    daemons = list(live.daemons)
    return {
        "written": live.readings_written_total,
        "received": sum(h.readings_total for h in daemons),
        "last_reading_ns": [h.last_reading_ns for h in daemons if h.last_reading_ns],
        "backlog": live.db_backlog_readings,
        "queued": c.pipeline.queue.items if c.pipeline is not None else 0,
        "rss_bytes": _rss_bytes(),
        "cpu_s": time.process_time(),  # all of this worker's threads
    }


def _rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# -- one /metrics for all workers ----------------------------------------------------------------
class _MergedMetrics:
    """Scrapes every worker's private /metrics and adds up identical series. Device, daemon and
    node series exist in one worker only; collector-wide counters and a run's energy add up
    across workers; the latest epoch/step of a run is the largest any worker saw."""

    def __init__(self, workers: list[_Worker]) -> None:
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple, float]] = {}
        up = Metric("parawatt_collector_worker_up", "1 while the worker answers.", "gauge")
        for w in self.workers:
            try:
                url = f"http://127.0.0.1:{w.metrics_port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as resp:
                    text = resp.read().decode()
            except (OSError, ValueError):
                up.add_sample(up.name, {"worker": str(w.index + 1)}, 0)
                continue
            up.add_sample(up.name, {"worker": str(w.index + 1)}, 1)
            for fam in text_string_to_metric_families(text):
                families.setdefault(fam.name, Metric(fam.name, fam.documentation, fam.type))
                acc = values.setdefault(fam.name, {})
                take_max = fam.type == "gauge" and (
                    fam.name in _MAX_GAUGES or fam.name.endswith("_info")
                )
                for s in fam.samples:
                    if s.name.endswith("_created"):
                        continue
                    key = (s.name, tuple(sorted(s.labels.items())))
                    old = acc.get(key)
                    acc[key] = s.value if old is None else (
                        max(old, s.value) if take_max else old + s.value
                    )  # fmt: skip
        for name, fam in families.items():
            for (sample, labels), value in values[name].items():
                fam.add_sample(sample, dict(labels), value)
            yield fam
        yield up
