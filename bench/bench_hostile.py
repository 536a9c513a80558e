"""Hostile-input benchmark: what abuse costs the daemon and the collector.

1. garbage: the daemon's RSS before and after N undecodable request bodies (and its log lines);
2. refusals: markers refused per second, for run ownership (another owner's token: the rest of
   the batch is taken) and for validation (an implausible marker refuses its whole batch);
3. runs: a collector's ingest lag (now minus the newest reading the join has seen) while RUNS
   runs start on one daemon within a minute; max and at the end;
4. flood: RUN_STARTs sent as fast as a daemon takes them (batches of 1000): run starts written per
   second, and how far the stored readings lag behind meanwhile (now minus the newest reading in
   the database; before bulk run starts, 30,000 left readings unwritten for minutes);
5. dead: the join's CPU for 100 s of one GPU's readings while DEAD runs killed without their
   end (run and epoch intervals open for good) are held, against none held (pure join).

The daemon is a real `power-daemon serve` process (sim backend); the collector runs in this
process exactly as `collector serve` builds it, into SQLite.

    .venv/bin/python bench/bench_hostile.py                  # 100,000 bodies, 10,000 runs
    .venv/bin/python bench/bench_hostile.py --garbage 5000 --runs 1000   # quick
    .venv/bin/python bench/bench_hostile.py --only flood --flood 30000
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collector.config import CollectorConfig  # noqa: E402
from collector.service import create_collector  # noqa: E402
from parawatt_proto import parawatt_pb2 as pb  # noqa: E402
from parawatt_proto import parawatt_pb2_grpc as pb_grpc  # noqa: E402
from tests.support.daemon_process import DaemonProcess  # noqa: E402

GARBAGE = (b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05\x12\x03\xc3\x28x")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) / 1024


def garbage(workdir: Path, n: int) -> None:
    with DaemonProcess(workdir) as d, grpc.insecure_channel(d.address) as channel:
        send = channel.unary_unary("/parawatt.v1.PowerDaemon/SendMarkers")

        def flood(k: int) -> None:
            for i in range(k):
                try:
                    send(GARBAGE[i % 3], timeout=10)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc

        flood(1000)  # warm-up
        before, t0 = rss_mib(d.proc.pid), time.perf_counter()
        flood(n)
        took = time.perf_counter() - t0
        time.sleep(0.5)
        after = rss_mib(d.proc.pid)
        d.kill()
        log = Path(d.log.name).read_text()
    print(f"garbage bodies:      {n:,} in {took:.1f} s ({n / took:,.0f}/s), all INVALID_ARGUMENT")
    print(f"  daemon RSS:        {before:.1f} MiB -> {after:.1f} MiB ({after - before:+.1f} MiB)")
    print(f"  log lines:         {log.count('refused a request')} ('Traceback' in log: "
          f"{'Traceback' in log})")  # fmt: skip


def refusals(workdir: Path, seconds: float) -> None:
    with DaemonProcess(workdir) as d, grpc.insecure_channel(d.address) as channel:
        stub = pb_grpc.PowerDaemonStub(channel)
        owner, intruder = secrets.token_bytes(32), secrets.token_bytes(32)

        def mk(kind, token, step=0, **kw) -> pb.Marker:
            return pb.Marker(run_id="victim", kind=kind, step=step, time_ns=time.time_ns(),
                             run_token=token, **kw)  # fmt: skip

        stub.SendMarkers(pb.MarkerBatch(markers=[mk(pb.RUN_START, owner)]), timeout=5)
        batch = pb.MarkerBatch(markers=[mk(pb.STEP_START, intruder, s) for s in range(1000)])
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            ack = stub.SendMarkers(batch, timeout=10)
            assert ack.rejected == 1000 and ack.accepted == 0
            n += ack.rejected
        took = time.perf_counter() - t0
        print(f"ownership refusals:  {n / took:,.0f} markers/s (batches of 1000, another token)")
        bad = mk(pb.RUN_END, owner, epoch=3)
        for size in (1, 1000):
            batch = pb.MarkerBatch(markers=[*(mk(pb.STEP_START, owner, 1) for _ in range(size - 1)),
                                            bad])  # fmt: skip
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                try:
                    stub.SendMarkers(batch, timeout=10)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
                    n += 1
            took = time.perf_counter() - t0
            print(f"validation refusals: {n / took:,.0f} batches/s = {n * size / took:,.0f} "
                  f"markers/s (batches of {size}, the last one implausible)")  # fmt: skip
        d.kill()


def runs(workdir: Path, n_runs: int, within_s: float) -> None:
    with DaemonProcess(workdir) as d, grpc.insecure_channel(d.address) as channel:
        stub = pb_grpc.PowerDaemonStub(channel)
        cfg = CollectorConfig(daemons=(d.address,), db_url=f"sqlite:///{workdir}/runs.db",
                              metrics_listen=None)  # fmt: skip
        with create_collector(cfg) as c:
            host = stub.GetInfo(pb.GetInfoRequest(), timeout=5).hostname
            lags: list[float] = []
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.25):
                    mark = c.joiner.watermark_ns(host)
                    if mark:
                        lags.append((time.time_ns() - mark) / 1e9)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            per_batch = 100
            t0 = time.perf_counter()
            for b in range(0, n_runs, per_batch):
                now = time.time_ns()
                ms = [pb.Marker(run_id=f"flood-{i:05d}", kind=pb.RUN_START, time_ns=now,
                                local_rank=i % 2, run_token=secrets.token_bytes(32),
                                config=pb.RunConfig(world_size=1, model="m"))
                      for i in range(b, min(n_runs, b + per_batch))]  # fmt: skip
                stub.SendMarkers(pb.MarkerBatch(markers=ms), timeout=30)
                pace = t0 + within_s * (b + per_batch) / n_runs - time.perf_counter()
                if pace > 0:
                    time.sleep(pace)
            sent_s = time.perf_counter() - t0
            time.sleep(5)  # and a few seconds after
            done.set()
            sampler.join()
            flushed = c.flush(120)
            live = c.live
            print(f"runs started:        {n_runs:,} in {sent_s:.1f} s on one daemon")
            print(
                f"  ingest lag:        max {max(lags):.2f} s, at the end {lags[-1]:.2f} s "
                f"(now minus the newest reading the join has seen; {len(lags)} samples)"
            )
            print(
                f"  run series:        {len(live.runs)} live "
                f"(overflow counted: {getattr(live, 'runs_overflow_total', 'n/a')}); flushed: {flushed}"
            )
        d.kill()


def flood(workdir: Path, n_runs: int, timeout_s: float = 300.0) -> None:
    from sqlalchemy import func, select

    from collector.store.models import Reading, Run

    with DaemonProcess(workdir) as d, grpc.insecure_channel(d.address) as channel:
        stub = pb_grpc.PowerDaemonStub(channel)
        cfg = CollectorConfig(daemons=(d.address,), db_url=f"sqlite:///{workdir}/flood.db",
                              metrics_listen=None)  # fmt: skip
        with create_collector(cfg) as c:
            time.sleep(3)  # readings flowing
            t0 = time.perf_counter()
            for b in range(0, n_runs, 1000):
                now = time.time_ns()
                ms = [pb.Marker(run_id=f"fs-{i:06d}", kind=pb.RUN_START, time_ns=now,
                                run_token=secrets.token_bytes(32),
                                config=pb.RunConfig(world_size=1, model="m"))
                      for i in range(b, min(n_runs, b + 1000))]  # fmt: skip
                stub.SendMarkers(pb.MarkerBatch(markers=ms), timeout=30)
            sent_s = time.perf_counter() - t0
            lags, written = [], 0
            while time.perf_counter() - t0 < timeout_s:
                with c.engine.connect() as conn:
                    written = conn.scalar(select(func.count()).select_from(Run))
                    newest = conn.scalar(select(func.max(Reading.time_ns)))
                lags.append((time.time_ns() - (newest or 0)) / 1e9)
                if written >= n_runs:
                    break
                time.sleep(0.5)
            took = time.perf_counter() - t0
            print(
                f"run start flood:     {n_runs:,} sent in {sent_s:.1f} s; {written:,} written "
                f"in {took:.1f} s ({written / took:,.0f} runs/s)"
            )
            print(f"  reading lag:       max {max(lags):.1f} s, at the end {lags[-1]:.1f} s "
                  f"(now minus the newest stored reading)")  # fmt: skip
        d.kill()


def dead(n_runs: int) -> None:
    from collector.join.joiner import JoinConfig, Joiner
    from tests.collector.synth import MS, T0, S, SynthDevice, marker, node

    def feed(j: Joiner, readings, markers=()) -> None:
        markers, mi = sorted(markers, key=lambda m: m.time_ns), 0
        for i in range(0, len(readings), 50):
            chunk = readings[i : i + 50]
            j.add_readings("n1", chunk)
            due = [m for m in markers[mi:] if m.time_ns <= chunk[-1].time_ns]
            mi += len(due)
            j.add_markers("n1", due)
            j.poll()

    dev = SynthDevice("gpu-0", idle_w=60.0)
    t, ms = T0 + 5 * S, []
    for k in range(n_runs):  # each killed 20 ms after its epoch began, 0.1 s apart
        rid = f"job{k}"
        ms += [marker("run_start", t, run_id=rid), marker("epoch_start", t + 10 * MS, run_id=rid)]
        t += 100 * MS
    more = dev.readings(t + 60 * S, t + 160 * S, seq0=10**7)
    cpu = []
    for markers in (ms, []):
        j = Joiner(JoinConfig())
        j.add_node(node("n1", [dev]))
        feed(j, dev.readings(T0, t + 60 * S), markers)
        held = len(j.pending_keys())
        tic = time.process_time()
        feed(j, more)
        cpu.append((time.process_time() - tic, held))
    (with_s, held), (none_s, _) = cpu
    print(f"dead intervals held: {held:,} ({n_runs:,} runs killed without their end)")
    print(f"  join CPU:          {with_s:.2f} s per 100 s of readings ({none_s:.2f} s with none)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--garbage", type=int, default=100_000, help="undecodable bodies to send")
    ap.add_argument("--refuse-s", type=float, default=3.0, help="seconds per refusal figure")
    ap.add_argument("--runs", type=int, default=10_000, help="runs started on one daemon")
    ap.add_argument("--within-s", type=float, default=60.0, help="...within this many seconds")
    ap.add_argument("--flood", type=int, default=30_000, help="RUN_STARTs sent at once")
    ap.add_argument("--dead", type=int, default=5_000, help="runs killed without their end")
    ap.add_argument("--only", choices=("garbage", "refusals", "runs", "flood", "dead"),
                    default=None)  # fmt: skip
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        work = Path(tmp)
        if a.only in (None, "garbage"):
            garbage(work, a.garbage)
        if a.only in (None, "refusals"):
            refusals(work, a.refuse_s)
        if a.only in (None, "runs"):
            runs(work, a.runs, a.within_s)
        if a.only in (None, "flood"):
            flood(work, a.flood)
        if a.only in (None, "dead"):
            dead(a.dead)


if __name__ == "__main__":
    main()
