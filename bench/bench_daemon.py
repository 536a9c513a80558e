"""Power daemon benchmark (prints figures; not a test).

    .venv/bin/python bench/bench_daemon.py [--seconds 10] [--readings 400000]

1. Sampling jitter: p50/p99 of |period error| at 50 and 100 Hz with 8 sim devices (in process).
2. Daemon CPU use (process CPU time / wall) at 8 devices x 50 Hz, idle and with one subscriber
   (a `power-daemon serve` subprocess; the subscriber runs here).
3. Streaming throughput: readings/s to one subscriber on loopback, from a daemon subprocess
   whose buffer was prefilled, for several batch sizes.
4. Holes under CPU contention (--only holes): a `power-daemon serve` subprocess sampling at
   50 Hz with one subscriber while 2 CPU training ranks (torchrun, trainer's tiny ResNet) run
   on this machine; the spacing of its readings (p50 / p99 / worst / holes > 5x median), for
   the sampler as it was (nice 0, 5 ms GIL switch), with a raised priority and 1 ms switch,
   and under SCHED_FIFO (--sampler-realtime; needs root or CAP_SYS_NICE) with 1 and 0.2 ms.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto import parawatt_pb2_grpc as pb_grpc
from power_daemon.backends.sim import SimBackend
from power_daemon.config import DaemonConfig
from power_daemon.serve.server import create_server

ROOT = Path(__file__).resolve().parents[1]


class _Recorder:
    """Wraps a backend and records the time of every read (the reading timestamps)."""

    def __init__(self, backend: SimBackend) -> None:
        self._backend, self.times = backend, []
        self.name, self.driver_version = backend.name, backend.driver_version

    def devices(self):
        return self._backend.devices()

    def read(self, now_ns):
        self.times.append(now_ns)
        return self._backend.read(now_ns)

    def on_marker(self, marker, now_ns):
        self._backend.on_marker(marker, now_ns)

    def canonical_uuid(self, uuid):
        return self._backend.canonical_uuid(uuid)

    def close(self):
        self._backend.close()


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else 0


def bench_jitter(hz: int, seconds: float) -> None:
    config = DaemonConfig(listen="127.0.0.1:0", backend="sim", sim_devices=8, interval_ms=1000 / hz)
    sim = SimBackend(8, config.sim, hostname="bench", seed=0, start_ns=time.time_ns())
    recorder = _Recorder(sim)
    server, _ = create_server(config, recorder)
    with server:
        server.start()
        time.sleep(seconds)
    periods = [b - a for a, b in zip(recorder.times, recorder.times[1:], strict=False)]
    errors_us = [abs(p - config.interval_ns) / 1e3 for p in periods]
    mean_period_ms = (recorder.times[-1] - recorder.times[0]) / len(periods) / 1e6
    print(
        f"jitter {hz:>3} Hz, 8 devices: {len(periods)} periods, |period error| "
        f"p50 {_pct(errors_us, 50):.0f} us, p99 {_pct(errors_us, 99):.0f} us, "
        f"max {max(errors_us):.0f} us; mean period {mean_period_ms:.4f} ms "
        f"(nominal {1000 / hz:.4f}); skipped ticks {server.core.sampler.skipped_ticks}"
    )


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _spawn(args: list[str], port_file: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode()
    if not line.startswith("power-daemon listening"):
        proc.kill()
        raise SystemExit(f"daemon did not start: {line!r}")
    return proc, f"127.0.0.1:{int(port_file.read_text())}"


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def bench_cpu(seconds: float, tmp: Path, linger_ms: float) -> None:
    port_file = tmp / "cpu.port"
    args = [sys.executable, "-m", "power_daemon", "serve", "--backend", "sim", "--no-rapl",
            "--sim-devices", "8", "--interval-ms", "20", "--listen", "127.0.0.1:0",
            "--stream-linger-ms", str(linger_ms), "--port-file", str(port_file)]  # fmt: skip
    proc, address = _spawn(args, port_file)
    try:
        time.sleep(2.0)  # warm-up: imports done, buffer filling
        for label, subscribe in (("no subscriber", False), ("one subscriber", True)):
            received = [0]
            with grpc.insecure_channel(address) as channel:
                stream = None
                if subscribe:
                    stub = pb_grpc.PowerDaemonStub(channel)
                    stream = stub.Subscribe(pb.SubscribeRequest())

                    def follow(stream=stream, received=received):
                        try:
                            for batch in stream:
                                received[0] += len(batch.readings)
                        except grpc.RpcError:
                            pass

                    thread = threading.Thread(target=follow, daemon=True)
                    thread.start()
                    time.sleep(1.0)  # catch-up of the warm-up backlog is not steady state
                cpu0, wall0, got0 = _cpu_s(proc.pid), time.monotonic(), received[0]
                time.sleep(seconds)
                cpu, wall = _cpu_s(proc.pid) - cpu0, time.monotonic() - wall0
                rate = (received[0] - got0) / wall
                if stream is not None:
                    stream.cancel()
            extra = f", {rate:.0f} readings/s received" if subscribe else ""
            print(
                f"cpu 8 devices x 50 Hz, linger {linger_ms:g} ms, {label}: "
                f"{100 * cpu / wall:.2f}% of one core "
                f"({cpu:.2f} s CPU in {wall:.1f} s){extra}"
            )
    finally:
        _stop(proc)


def serve_prefilled(n_readings: int, port_file: Path) -> None:
    """Child process: a daemon whose buffer already holds n_readings readings of 8 devices."""
    ticks = n_readings // 8
    config = DaemonConfig(
        listen="127.0.0.1:0", backend="sim", sim_devices=8, rapl="off", interval_ms=60_000,
        buffer_capacity=n_readings + 1000,
    )  # fmt: skip
    server, port = create_server(config)
    start = time.time_ns()
    for k in range(ticks):
        server.core.sample_once(start + k * 20_000_000)
    server.start()  # its sampler adds one more tick
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    port_file.write_text(str(port))
    print(f"power-daemon listening on 127.0.0.1:{port}", flush=True)
    stop.wait()
    server.close()


def bench_throughput(n_readings: int, tmp: Path) -> None:
    port_file = tmp / "tp.port"
    t0 = time.monotonic()
    args = [sys.executable, str(Path(__file__).resolve()), "--serve-prefilled",
            str(n_readings), "--port-file", str(port_file)]  # fmt: skip
    proc, address = _spawn(args, port_file)
    rss_mib = _rss_kib(proc.pid) / 1024
    print(
        f"throughput: prefilled {n_readings} readings in {time.monotonic() - t0:.1f} s; "
        f"daemon RSS {rss_mib:.0f} MiB"
    )
    try:
        with grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", 64 << 20)]
        ) as channel:
            stub = pb_grpc.PowerDaemonStub(channel)
            for max_batch in (1, 10, 100, 1000, 5000):
                rates = []
                for _ in range(3 if max_batch > 1 else 1):
                    limit = n_readings if max_batch >= 100 else 20_000
                    t, got = time.perf_counter(), 0
                    for batch in stub.Subscribe(
                        pb.SubscribeRequest(no_follow=True, max_batch=max_batch)
                    ):
                        got += len(batch.readings)
                        if got >= limit:
                            break
                    rates.append(got / (time.perf_counter() - t))
                print(
                    f"throughput max_batch={max_batch:>5}: {max(rates):>9,.0f} readings/s best, "
                    f"{statistics.median(rates):>9,.0f} median (one subscriber, loopback, "
                    f"{got} readings)"
                )
    finally:
        _stop(proc)


def _training_ranks(seconds: float) -> subprocess.Popen:
    from tests.support.torchrun import start_torchrun
    from tests.trainer.trainer_args import RESNET

    args = ["trainer", "train", "--quiet", *RESNET, "--epochs", "1000", "--steps-per-epoch",
            "1000", "--local-batch-size", "8"]  # fmt: skip
    del seconds
    return start_torchrun(args, 2, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)  # fmt: skip


def bench_holes(seconds: float, tmp: Path, interval_ms: float) -> None:
    variants = (("as before: nice 0, GIL switch 5 ms", ["--no-sampler-realtime", "--sampler-nice",
                                                        "0", "--gil-switch-ms", "5"]),
                ("nice -10, GIL switch 1 ms", ["--no-sampler-realtime", "--sampler-nice", "-10",
                                               "--gil-switch-ms", "1"]),
                ("SCHED_FIFO, GIL switch 1 ms", ["--sampler-realtime", "--gil-switch-ms", "1"]),
                ("SCHED_FIFO, GIL switch 0.2 ms", ["--sampler-realtime", "--gil-switch-ms",
                                                   "0.2"]))  # fmt: skip
    ranks = _training_ranks(seconds)
    try:
        time.sleep(15.0)  # torch imports, DDP rendezvous: the ranks are computing by now
        if ranks.poll() is not None:
            raise SystemExit("training ranks did not start")
        for label, extra in variants:
            port_file = tmp / "holes.port"
            args = [sys.executable, "-m", "power_daemon", "serve", "--backend", "sim",
                    "--no-rapl", "--sim-devices", "2", "--interval-ms", str(interval_ms), "--listen",
                    "127.0.0.1:0", "--calibrate-s", "0", "--port-file", str(port_file), *extra]  # fmt: skip
            proc, address = _spawn(args, port_file)
            times: list[int] = []
            try:
                with grpc.insecure_channel(address) as channel:
                    stream = pb_grpc.PowerDaemonStub(channel).Subscribe(pb.SubscribeRequest())
                    end = time.monotonic() + seconds
                    for batch in stream:
                        times += [r.time_ns for r in batch.readings if r.device == 0]
                        if time.monotonic() > end:
                            break
                    stream.cancel()
            finally:
                _stop(proc)
            gaps = [(b - a) / 1e6 for a, b in zip(times, times[1:], strict=False)]
            med = statistics.median(gaps)
            holes = sum(g > 5 * med for g in gaps)
            print(f"holes at {1000 / interval_ms:g} Hz, 2 training ranks busy, {label}: "
                  f"{len(times)} readings, "
                  f"spacing p50 {med:.1f} ms, p99 {_pct(gaps, 99):.1f} ms, worst "
                  f"{max(gaps):.1f} ms, {holes} holes > 5x median")  # fmt: skip
    finally:
        os.killpg(ranks.pid, signal.SIGTERM)
        ranks.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--readings", type=int, default=400_000)
    parser.add_argument("--linger-ms", type=float, default=100.0, help="daemon stream linger")
    parser.add_argument("--only", choices=("jitter", "cpu", "throughput", "holes"))
    parser.add_argument("--holes-interval-ms", type=float, default=20.0)
    parser.add_argument("--serve-prefilled", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_prefilled:
        serve_prefilled(args.serve_prefilled, args.port_file)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "jitter"):
            for hz in (50, 100):
                bench_jitter(hz, args.seconds)
        if args.only in (None, "cpu"):
            bench_cpu(args.seconds, Path(tmp), args.linger_ms)
        if args.only in (None, "throughput"):
            bench_throughput(args.readings, Path(tmp))
        if args.only in (None, "holes"):
            bench_holes(args.seconds, Path(tmp), args.holes_interval_ms)


if __name__ == "__main__":
    main()
