"""Transport security benchmark (prints figures; not a test).

    .venv/bin/python bench/bench_transport.py [--readings 200000]

1. Streaming throughput to one subscriber (batches of 500, as the collector asks), plaintext vs
   mutual TLS, from a daemon in this process whose buffer was prefilled (both sides share one
   interpreter here, so the figures compare the two, they are not the daemon's ceiling).
2. SendMarkers round trip (one marker per call, p50/p99): TCP plaintext, TCP mTLS, Unix socket.
3. /metrics scrape latency over HTTPS with basic auth: the first scrape (one bcrypt check, cost
   12) and the following ones (verified password remembered).
"""

from __future__ import annotations

import argparse
import base64
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import bcrypt
from prometheus_client import CollectorRegistry, Gauge

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto import parawatt_pb2_grpc as pb_grpc
from parawatt_proto.transport import ClientTLS, open_channel
from parawatt_proto.webconfig import MetricsHTTPServer, load_web_config
from power_daemon.config import DaemonConfig
from power_daemon.serve.server import create_server

ROOT = Path(__file__).resolve().parents[1]


def make_certs(out: Path) -> Path:
    subprocess.run(["bash", str(ROOT / "deploy" / "make-certs.sh"), str(out), "bench"],
                   check=True, capture_output=True)  # fmt: skip
    return out


def daemon(n_readings: int, tls: dict, sock: str | None):
    config = DaemonConfig(listen="127.0.0.1:0", backend="sim", sim_devices=8, rapl="off",
                          interval_ms=60_000, buffer_capacity=n_readings + 1000,
                          marker_socket=sock, **tls)  # fmt: skip
    server, port = create_server(config)
    start = time.time_ns()
    for k in range(n_readings // 8):
        server.core.sample_once(start + k * 20_000_000)
    return server.start(), f"127.0.0.1:{port}"


def throughput(address: str, tls: ClientTLS | None, n: int, columnar: bool = False) -> float:
    """Readings/s one subscriber receives; columnar: as the collector asks (the daemon re-packs
    each message's readings into ReadingColumns, its per-reading cost)."""
    rates = []
    with open_channel(address, tls, [("grpc.max_receive_message_length", 64 << 20)]) as ch:
        stub = pb_grpc.PowerDaemonStub(ch)
        for _ in range(3):
            t, got = time.perf_counter(), 0
            request = pb.SubscribeRequest(no_follow=True, max_batch=500, columnar=columnar)
            for batch in stub.Subscribe(request):
                got += len(batch.columns.seq) if columnar else len(batch.readings)
            rates.append(got / (time.perf_counter() - t))
    return statistics.median(rates)


def marker_rtt(address: str, tls: ClientTLS | None, calls: int = 300) -> tuple[float, float]:
    with open_channel(address, tls) as ch:
        stub = pb_grpc.PowerDaemonStub(ch)
        times = []
        for i in range(calls):
            m = pb.Marker(run_id="bench", kind=pb.STEP_START, epoch=0, step=i + 1,
                          time_ns=time.time_ns())  # fmt: skip
            t = time.perf_counter()
            stub.SendMarkers(pb.MarkerBatch(markers=[m]), timeout=5)
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3


def scrape_latency(certs: Path) -> tuple[float, float]:
    password = "bench-password"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(12)).decode()
    (certs / "web.yml").write_text(
        "tls_server_config:\n  cert_file: metrics.crt\n  key_file: metrics.key\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    registry = CollectorRegistry()
    Gauge("parawatt_bench", "x", registry=registry).set(1)
    server = MetricsHTTPServer(registry, "127.0.0.1", 0, load_web_config(certs / "web.yml"))
    import ssl

    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    token = base64.b64encode(f"prometheus:{password}".encode()).decode()
    times = []
    try:
        for _ in range(51):
            req = urllib.request.Request(f"https://127.0.0.1:{server.port}/metrics")
            req.add_header("Authorization", f"Basic {token}")
            t = time.perf_counter()
            with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                resp.read()
            times.append(time.perf_counter() - t)
    finally:
        server.close()
    return times[0] * 1e3, statistics.median(times[1:]) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certs(Path(tmp) / "pki")
        mtls = dict(tls_cert=str(certs / "daemon.crt"), tls_key=str(certs / "daemon.key"),
                    tls_client_ca=str(certs / "ca.crt"))  # fmt: skip
        client = ClientTLS(ca=certs / "ca.crt", cert=certs / "client.crt", key=certs / "client.key")
        sock = str(Path(tmp) / "m.sock")
        plain_d, plain_addr = daemon(args.readings, {}, None)
        tls_d, tls_addr = daemon(args.readings, mtls, sock)
        try:
            for name, addr, tls in (("plaintext", plain_addr, None), ("mTLS", tls_addr, client)):
                rate = throughput(addr, tls, args.readings)
                print(f"stream {name:9}: {rate:,.0f} readings/s (batches of 500, median of 3)")
            rate = throughput(plain_addr, None, args.readings, columnar=True)
            print(f"stream columns  : {rate:,.0f} readings/s (plaintext, what a collector asks)")
            for name, addr, tls in (("TCP plaintext", plain_addr, None),
                                    ("TCP mTLS", tls_addr, client), ("unix socket", f"unix:{sock}", None)):  # fmt: skip
                p50, p99 = marker_rtt(addr, tls)
                print(
                    f"SendMarkers {name:13}: p50 {p50:.2f} ms, p99 {p99:.2f} ms (one marker per call)"
                )
        finally:
            plain_d.close()
            tls_d.close()
        first, cached = scrape_latency(certs)
        print(f"/metrics HTTPS + basic auth (bcrypt cost 12): first scrape {first:.0f} ms, "
              f"following scrapes {cached:.1f} ms (median of 50)")  # fmt: skip


if __name__ == "__main__":
    main()
