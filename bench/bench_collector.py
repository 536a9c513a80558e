"""Collector ingest benchmark: readings/s end to end into SQLite and PostgreSQL, and the
marker-to-SQL latency.

Synthetic high-rate daemons (a separate process, real gRPC servers speaking the PowerDaemon
contract) stream DEVICES readings per tick at RATE_HZ each, live and paced by the wall clock,
with a job's markers interleaved (RANKS ranks per node stepping every STEP_S seconds, so the join
does real work). The collector under test runs in this process exactly as `collector serve`
builds it. Reported: readings/s committed in the steady window, stream lag and write backlog at
its start and end (sustained = they do not grow), and marker latency (a marker's time_ns to the
moment its row is visible in the database), p50/p99.

    .venv/bin/python bench/bench_collector.py                       # SQLite, 4 x 128 GPUs @ 100 Hz
    .venv/bin/python bench/bench_collector.py --db postgres          # throwaway PostgreSQL cluster
    .venv/bin/python bench/bench_collector.py --max                  # unpaced: as fast as it goes
    .venv/bin/python bench/bench_collector.py --max --workers 2      # one collector, 2 processes
    .venv/bin/python bench/bench_collector.py --db postgres --max --collectors 2   # 2 collectors
    .venv/bin/python bench/bench_collector.py --seconds 600 --rss-every 30         # RSS over time
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from parawatt_proto import parawatt_pb2 as pb  # noqa: E402

SERVICE = "parawatt.v1.PowerDaemon"


# -- the synthetic daemon (runs in a child process) ----------------------------------------------
class SynthDaemon:
    def __init__(self, host: str, devices: int, rate_hz: float, ranks: int, step_s: float,
                 paced: bool, total_ticks: int, columnar: bool = True,
                 linger_ms: float = 100.0, max_batch: int = 2000) -> None:  # fmt: skip
        self.host, self.devices, self.period_ns = host, devices, int(1e9 / rate_hz)
        self.ranks, self.step_ticks = ranks, max(1, round(step_s * rate_hz))
        self.paced, self.total_ticks, self.columnar = paced, total_ticks, columnar
        # a daemon waits up to its stream linger (100 ms by default) to fill a message
        # or until the message holds the max_batch readings the subscriber asked for
        self.ticks_per_message = max(
            1, min(round(linger_ms * 1e6 / self.period_ns), max_batch // devices)
        )
        self.boot_id = f"bench-{host}-{os.getpid()}"
        self.prebuilt: list[bytes] | None = None
        self.uuids = [f"bench-GPU-{host}-{i:04d}" for i in range(devices)]

    def info(self) -> pb.NodeInfo:
        devs = [pb.DeviceInfo(index=i, uuid=u, name="bench GPU", kind=pb.DEVICE_KIND_GPU,
                              has_energy_counter=True, has_instant_power=True,
                              energy_counter_update_s=0.1, energy_counter_resolution_j=0.001,
                              power_avg_window_s=1.0) for i, u in enumerate(self.uuids)]  # fmt: skip
        return pb.NodeInfo(hostname=self.host, boot_id=self.boot_id, backend="bench",
                           interval_ns=self.period_ns, devices=devs, time_ns=time.time_ns())  # fmt: skip

    def Subscribe(self, request, context):
        yield pb.StreamBatch(
            boot_id=self.boot_id, first_seq=1, next_seq=1, info=self.info()
        ).SerializeToString()
        if self.prebuilt is not None:  # unpaced: as fast as gRPC takes them
            for message in self.prebuilt:
                if not context.is_active():
                    return
                yield message
        else:
            t0 = time.time_ns()
            for k, message in enumerate(self.batches(t0)):
                tick = (k + 1) * self.ticks_per_message - 1  # sent once its last tick is read
                wait = (t0 + tick * self.period_ns - time.time_ns()) / 1e9
                if wait > 0:
                    time.sleep(wait)
                if not context.is_active():
                    return
                yield message
        while context.is_active():  # a daemon stays up: no more data, but no end of stream
            time.sleep(0.2)

    def prebuild(self) -> None:
        """Unpaced runs measure the collector, not this generator: serialize everything first
        (timestamps then run from now into the future, which the collector does not mind)."""
        self.prebuilt = list(self.batches(time.time_ns()))

    def batches(self, t0: int):
        seq = 1
        energy = [0.0] * self.devices  # exact integral
        counter = [0.0] * self.devices  # what the "driver" reports: updated every 100 ms
        ticks_per_update = max(1, round(1e8 / self.period_ns))
        for tick in range(self.total_ticks):
            t = t0 + tick * self.period_ns
            if tick % self.ticks_per_message == 0:
                batch = pb.StreamBatch(boot_id=self.boot_id, first_seq=seq)
            for m in self._markers(tick, t):
                m.seq = seq
                batch.markers.append(m)
                seq += 1
            update = tick % ticks_per_update == 0
            rows = []
            for d in range(self.devices):
                busy = d < self.ranks and (tick // self.step_ticks) % 2 == 0
                p = (300.0 if busy else 90.0) + 5.0 * math.sin(tick / 7 + d)
                energy[d] += p * self.period_ns / 1e9
                if update:
                    counter[d] = math.floor(energy[d] * 1000) / 1000
                rows.append((seq, d, t, p, busy))
                seq += 1
            if self.columnar:  # what the daemon sends a collector (SubscribeRequest.columnar)
                n, nan = len(rows), math.nan
                c = batch.columns
                c.seq.extend(r[0] for r in rows)
                c.device.extend(r[1] for r in rows)
                c.time_ns.extend([t] * n)
                c.status.extend([0] * n)
                c.power_w.extend(r[3] for r in rows)
                c.power_avg_w.extend(r[3] for r in rows)
                c.energy_j.extend(counter)
                c.gpu_util_pct.extend(97.0 if r[4] else 3.0 for r in rows)
                c.mem_util_pct.extend([nan] * n)
                c.memory_used_bytes.extend([2e10] * n)
                c.temperature_c.extend([55.0] * n)
                c.sm_clock_mhz.extend([1980.0] * n)
                c.mem_clock_mhz.extend([nan] * n)
                c.power_from_avg.extend([False] * n)
            else:
                for sq, d, _, p, busy in rows:
                    batch.readings.add(seq=sq, device=d, time_ns=t, power_w=p, power_avg_w=p,
                                       gpu_util_pct=97.0 if busy else 3.0, temperature_c=55.0,
                                       sm_clock_mhz=1980.0, memory_used_bytes=2e10,
                                       energy_j=counter[d])  # fmt: skip
            batch.next_seq = seq
            if (tick + 1) % self.ticks_per_message == 0 or tick == self.total_ticks - 1:
                yield batch.SerializeToString()

    def _markers(self, tick: int, t: int) -> list[pb.Marker]:
        """A job on the first `ranks` GPUs: RUN_START at tick 0, steps of step_ticks, run end."""
        out = []
        k = tick // self.step_ticks
        at_edge = tick % self.step_ticks == 0
        last = tick == self.total_ticks - 1
        run_id = f"bench-{self.host}"
        for r in range(self.ranks):
            base = dict(run_id=run_id, rank=r, time_ns=t, device_uuid=self.uuids[r], local_rank=r,
                        hostname=self.host)  # fmt: skip
            if tick == 0:
                cfg = pb.RunConfig(
                    world_size=self.ranks, model="bench", global_batch_size=self.ranks
                )
                out.append(pb.Marker(kind=pb.RUN_START, config=cfg, **base))
                out.append(pb.Marker(kind=pb.EPOCH_START, **base))
            if at_edge and not last:
                step = k // 2
                kind = pb.STEP_START if k % 2 == 0 else pb.STEP_END
                out.append(pb.Marker(kind=kind, step=step, **base))
            if last:
                out.append(pb.Marker(kind=pb.EPOCH_END, **base))
                out.append(pb.Marker(kind=pb.RUN_END, status=pb.RUN_STATUS_COMPLETED, **base))
        return out


def serve_synthetic(args) -> None:
    servers = []
    for i in range(args.daemons):
        d = SynthDaemon(f"bench{i}", args.devices, args.rate_hz, args.ranks, args.step_s,
                        not args.max, int(args.seconds * args.rate_hz),
                        not args.rows, args.linger_ms, args.batch)  # fmt: skip
        if args.max:
            d.prebuild()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_stream_rpc_method_handler(
            d.Subscribe,
            request_deserializer=pb.SubscribeRequest.FromString,
            response_serializer=bytes,
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, {"Subscribe": handler})]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        print(f"127.0.0.1:{port}", flush=True)
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    for s in servers:
        s.stop(0)


# -- the measurement (parent process) ------------------------------------------------------
def watch_markers(engine, stop: threading.Event, latencies: list[float]) -> None:
    from collector.store.models import Marker

    last_id = 0
    while not stop.is_set():
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(Marker.id, Marker.time_ns).where(Marker.id > last_id)
                ).all()
        except Exception:
            rows = []
        now = time.time_ns()
        for mid, t in rows:
            latencies.append((t, (now - t) / 1e9))
            last_id = max(last_id, mid)
        time.sleep(0.02)


def run(args) -> None:
    from collector.config import CollectorConfig
    from collector.store.db import create_db_engine
    from collector.workers import WorkerPool

    tmp = Path(tempfile.mkdtemp(prefix="bench-collector-"))
    cluster = None
    if args.db == "postgres":
        from tests.support.postgres import start_cluster

        cluster = start_cluster()
        db_url = cluster.create_database("bench")
    else:
        db_url = f"sqlite:///{tmp / 'bench.db'}"
    child = subprocess.Popen([sys.executable, __file__, "--serve-synthetic", *sys.argv[1:]],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    addresses = []
    for line in child.stdout:
        if line.strip() == "ready":
            break
        addresses.append(line.strip())
    rate = args.daemons * args.devices * args.rate_hz
    print(
        f"{args.db}: {args.daemons} daemons x {args.devices} GPUs @ {args.rate_hz:g} Hz = "
        f"{rate:,.0f} readings/s offered{' (unpaced)' if args.max else ''}, {args.seconds:g} s; "
        f"{args.collectors} collector(s) x {args.workers} worker process(es)"
    )
    # Every collector runs in processes of its own (WorkerPool), as `collector serve` would:
    # this process only watches, so its threads do not share the collectors' GIL.
    pools = []
    for k in range(1, args.collectors + 1):
        cfg = CollectorConfig(daemons=tuple(addresses), db_url=db_url, metrics_listen=None,
                              subscribe_max_batch=args.batch, shard=(k, args.collectors))  # fmt: skip
        pools.append(WorkerPool(cfg, args.workers).start())
    engine = create_db_engine(db_url)
    stop, latencies, samples = threading.Event(), [], []
    watcher = threading.Thread(target=watch_markers, args=(engine, stop, latencies))
    watcher.start()
    t_start, t_start_ns = time.monotonic(), time.time_ns()
    next_rss = 0.0
    try:
        while time.monotonic() - t_start < args.seconds + 2:
            time.sleep(1.0)
            now_ns, t = time.time_ns(), time.monotonic() - t_start
            stats = [p.stats() for p in pools]
            lags = [(now_ns - x) / 1e9 for st in stats for x in st.get("last_reading_ns", [])]
            samples.append((t, sum(st.get("written", 0) for st in stats),
                            sum(st.get("received", 0) for st in stats),
                            max(lags, default=float("nan")),
                            sum(st.get("backlog", 0) for st in stats),
                            sum(st.get("queued", 0) for st in stats),
                            [st.get("written", 0) for st in stats],
                            sum(st.get("rss_bytes", 0) for st in stats),
                            sum(st.get("cpu_s", 0.0) for st in stats)))  # fmt: skip
            if args.verbose or (args.rss_every and t >= next_rss):
                next_rss = t + (args.rss_every or 0)
                _, w, r, lag, b, q, _, rss, _ = samples[-1]
                print(f"  t={t:5.1f} written={w:9d} received={r:9d} lag={lag:6.2f}s "
                      f"backlog={b:7d} queued={q:6d} rss={rss / 2**20:6.0f} MiB", flush=True)  # fmt: skip
        drained = all(p.flush(timeout_s=120) for p in pools)
        from collector.store.models import Marker

        with engine.connect() as conn:  # the watcher may skip ids committed out of order
            stored_markers = conn.scalar(select(func.count()).select_from(Marker))
        print(f"  markers stored: {stored_markers:,} (latency measured on those seen by id)")
    finally:
        stop.set()
        watcher.join()
        for p in pools:
            p.close()
        engine.dispose()
        child.stdin.close()
        child.wait(10)
        if cluster:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # a 10-minute run leaves gigabytes of SQLite
    report(args, samples, latencies, drained, t_start_ns)


def report(args, samples, latencies, drained, t_start_ns) -> None:
    steady = [s for s in samples if 3.0 <= s[0] <= args.seconds]
    if args.max and samples:  # unpaced: up to when everything offered was written
        done = next((s[0] for s in samples if s[1] >= samples[-1][1]), samples[-1][0])
        steady = [s for s in samples if 1.0 <= s[0] <= done]
    if len(steady) >= 2:
        (t0, w0, *_), (t1, w1, *_) = steady[0], steady[-1]
        print(
            f"  committed: {(w1 - w0) / (t1 - t0):,.0f} readings/s (steady window {t1 - t0:.0f} s)"
        )
        first, last = steady[: max(1, len(steady) // 4)], steady[-max(1, len(steady) // 4) :]
        lag = lambda xs: statistics.mean(s[3] for s in xs)  # noqa: E731
        backlog = lambda xs: statistics.mean(s[4] + s[5] for s in xs)  # noqa: E731
        print(
            f"  stream lag: {lag(first):.2f} s at the start, {lag(last):.2f} s at the end; "
            f"unwritten backlog {backlog(first):,.0f} -> {backlog(last):,.0f} readings"
        )
        cpu = steady[-1][8] - steady[0][8]
        if w1 > w0 and cpu > 0:
            us = cpu / (w1 - w0) * 1e6
            print(f"  collector CPU: {us:.1f} us per reading committed, i.e. "
                  f"{1e6 / us:,.0f} readings/s per core it gets (load average now "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")  # fmt: skip
        if args.collectors > 1:
            each = [(b - a) / (t1 - t0) for a, b in zip(steady[0][6], steady[-1][6], strict=True)]
            print("  per collector: " + ", ".join(f"{x:,.0f}" for x in each) + " readings/s")
    if samples:
        print(f"  total: {samples[-1][1]:,} readings committed; drained afterwards: {drained}")
        rss = [s[7] / 2**20 for s in samples if s[7]]
        if rss:
            print(
                f"  collector RSS (all its processes): max {max(rss):.0f} MiB, "
                f"last {rss[-1]:.0f} MiB, first minute max {max(rss[:60]):.0f} MiB"
            )
    steady_from = t_start_ns + 3_000_000_000
    for label, lat in (("all", [x for _, x in latencies]),
                       ("steady", [x for t, x in latencies if t >= steady_from])):  # fmt: skip
        if len(lat) >= 2:
            q = statistics.quantiles(lat, n=100)
            print(
                f"  marker-to-SQL latency ({label}): p50 {statistics.median(lat) * 1e3:.0f} ms, "
                f"p99 {q[98] * 1e3:.0f} ms, max {max(lat) * 1e3:.0f} ms ({len(lat)} markers)"
            )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--daemons", type=int, default=4)
    p.add_argument("--devices", type=int, default=128, help="GPUs per daemon")
    p.add_argument("--rate-hz", type=float, default=100.0)
    p.add_argument("--ranks", type=int, default=8, help="ranks (stepping GPUs) per daemon")
    p.add_argument("--step-s", type=float, default=0.2)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--batch", type=int, default=2000, help="max readings per stream message asked")
    p.add_argument("--max", action="store_true", help="unpaced: send as fast as possible")
    p.add_argument("--workers", type=int, default=1, help="processes per collector")
    p.add_argument(
        "--collectors",
        type=int,
        default=1,
        help="collectors sharing the database, each a --shard of the daemons",
    )
    p.add_argument(
        "--rss-every",
        type=float,
        default=0.0,
        help="print RSS and progress every this many seconds",
    )
    p.add_argument(
        "--linger-ms",
        type=float,
        default=100.0,
        help="a message holds this long of readings, as a daemon's --stream-linger-ms (at most "
        "--batch readings); 0: one tick a message",
    )
    p.add_argument(
        "--rows",
        action="store_true",
        help="daemons send Reading messages (the row form) instead of columns",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--serve-synthetic", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_synthetic:
        serve_synthetic(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
