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
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from sqlalchemy import select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from parawatt_proto import parawatt_pb2 as pb  # noqa: E402

SERVICE = "parawatt.v1.PowerDaemon"


# -- the synthetic daemon (runs in a child process) ----------------------------------------------
class SynthDaemon:
    def __init__(self, host: str, devices: int, rate_hz: float, ranks: int, step_s: float,
                 paced: bool, total_ticks: int) -> None:  # fmt: skip
        self.host, self.devices, self.period_ns = host, devices, int(1e9 / rate_hz)
        self.ranks, self.step_ticks = ranks, max(1, round(step_s * rate_hz))
        self.paced, self.total_ticks = paced, total_ticks
        self.boot_id = f"bench-{host}-{os.getpid()}"
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
        seq, t0 = 1, time.time_ns()
        energy = [0.0] * self.devices  # exact integral
        counter = [0.0] * self.devices  # what the "driver" reports: updated every 100 ms
        ticks_per_update = max(1, round(1e8 / self.period_ns))
        for tick in range(self.total_ticks):
            due = t0 + tick * self.period_ns
            if self.paced:
                wait = (due - time.time_ns()) / 1e9
                if wait > 0:
                    time.sleep(wait)
            if not context.is_active():
                return
            t = due if self.paced else time.time_ns()
            batch = pb.StreamBatch(boot_id=self.boot_id, first_seq=seq)
            for m in self._markers(tick, t):
                m.seq = seq
                batch.markers.append(m)
                seq += 1
            update = tick % ticks_per_update == 0
            for d in range(self.devices):
                busy = d < self.ranks and (tick // self.step_ticks) % 2 == 0
                p = (300.0 if busy else 90.0) + 5.0 * math.sin(tick / 7 + d)
                energy[d] += p * self.period_ns / 1e9
                r = batch.readings.add(seq=seq, device=d, time_ns=t, power_w=p, power_avg_w=p,
                                       gpu_util_pct=97.0 if busy else 3.0, temperature_c=55.0,
                                       sm_clock_mhz=1980.0, memory_used_bytes=2e10)  # fmt: skip
                if update:
                    counter[d] = math.floor(energy[d] * 1000) / 1000
                r.energy_j = counter[d]
                seq += 1
            batch.next_seq = seq
            yield batch.SerializeToString()
        while context.is_active():  # a daemon stays up: no more data, but no end of stream
            time.sleep(0.2)

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
                        not args.max, int(args.seconds * args.rate_hz))  # fmt: skip
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
    from collector.models import Marker

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
    from collector.service import create_collector

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
        f"{rate:,.0f} readings/s offered{' (unpaced)' if args.max else ''}, {args.seconds:g} s"
    )
    cfg = CollectorConfig(daemons=tuple(addresses), db_url=db_url, metrics_listen=None,
                          subscribe_max_batch=args.batch)  # fmt: skip
    collector = create_collector(cfg).start()
    stop, latencies, samples = threading.Event(), [], []
    watcher = threading.Thread(target=watch_markers, args=(collector.engine, stop, latencies))
    watcher.start()
    t_start, t_start_ns = time.monotonic(), time.time_ns()
    try:
        while time.monotonic() - t_start < args.seconds + 2:
            time.sleep(1.0)
            now_ns = time.time_ns()
            lags = [
                (now_ns - h.last_reading_ns) / 1e9
                for h in collector.live.daemons
                if h.last_reading_ns
            ]
            samples.append((time.monotonic() - t_start, collector.live.readings_written_total,
                            sum(h.readings_total for h in collector.live.daemons),
                            max(lags, default=float("nan")), collector.live.db_backlog_readings,
                            collector.pipeline.queue.qsize()))  # fmt: skip
            if args.verbose:
                t, w, r, lag, b, q = samples[-1]
                print(f"  t={t:5.1f} written={w:9d} received={r:9d} lag={lag:6.2f}s "
                      f"backlog={b:7d} queue={q:4d}")  # fmt: skip
        drained = collector.flush(timeout_s=120)
        if args.verbose:
            print_thread_cpu(time.monotonic() - t_start)
    finally:
        stop.set()
        watcher.join()
        collector.close()
        child.stdin.close()
        child.wait(10)
        if cluster:
            cluster.stop()
    report(args, samples, latencies, drained, t_start_ns)


def print_thread_cpu(wall_s: float) -> None:
    """CPU seconds per thread of this process (Linux /proc), to see where the time goes."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    rows = []
    for task in Path("/proc/self/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / tick
        rows.append((cpu_s, names.get(int(task.name), (task / "comm").read_text().strip())))
    total = sum(c for c, _ in rows)
    print(
        f"  collector process CPU: {total:.1f} s in {wall_s:.1f} s wall; by thread: "
        + ", ".join(f"{n} {c:.1f}" for c, n in sorted(rows, reverse=True)[:8])
    )


def report(args, samples, latencies, drained, t_start_ns) -> None:
    steady = [s for s in samples if 3.0 <= s[0] <= args.seconds]
    if len(steady) >= 2:
        (t0, w0, *_), (t1, w1, *_) = steady[0], steady[-1]
        print(
            f"  committed: {(w1 - w0) / (t1 - t0):,.0f} readings/s (steady window {t1 - t0:.0f} s)"
        )
        first, last = steady[: max(1, len(steady) // 4)], steady[-max(1, len(steady) // 4) :]
        lag = lambda xs: statistics.mean(s[3] for s in xs)  # noqa: E731
        backlog = lambda xs: statistics.mean(s[4] + s[5] * args.devices for s in xs)  # noqa: E731
        print(
            f"  stream lag: {lag(first):.2f} s at the start, {lag(last):.2f} s at the end; "
            f"unwritten backlog {backlog(first):,.0f} -> {backlog(last):,.0f} readings"
        )
    if samples:
        print(f"  total: {samples[-1][1]:,} readings committed; drained afterwards: {drained}")
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
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--serve-synthetic", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_synthetic:
        serve_synthetic(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
