"""Certificate reload: new TLS files are used for new connections, open streams continue.

What grpcio allows (power_daemon/serve/tls.py): its dynamic server credentials ask for the certificate
at every new handshake, so new connections get the new files; an open connection keeps the one it
was made with, and its streams carry on.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto import parawatt_pb2_grpc as pb_grpc
from parawatt_proto.transport import open_channel
from tests.security.certs import FRESH, health_check, make_certs
from tests.support.torchrun import PYTHON, REPO

SERVING = health_pb2.HealthCheckResponse.SERVING
FILES = ("daemon.crt", "daemon.key", "ca.crt")


def _install(src, live) -> None:
    """Replace the live files the way a deployment tool does: write aside, rename over."""
    for name in FILES:
        shutil.copy(src.dir / name, live / f".{name}.new")
        os.replace(live / f".{name}.new", live / name)


def _served(address: str, tls) -> bool:
    with open_channel(address, tls, FRESH) as channel:
        try:
            return health_check(channel, timeout_s=5) == SERVING
        except grpc.RpcError:
            return False


@pytest.fixture
def two_sites(tmp_path):
    old = make_certs(tmp_path / "old", "node1")
    new = make_certs(tmp_path / "new", "node1")
    live = tmp_path / "live"
    live.mkdir()
    for name in FILES:
        shutil.copy(old.dir / name, live / name)
    return old, new, live


def test_changed_files_serve_new_connections_while_open_streams_continue(
    start_sim_daemon, two_sites
):
    old, new, live = two_sites
    daemon = start_sim_daemon(tls_cert=str(live / "daemon.crt"), tls_key=str(live / "daemon.key"),
                              tls_client_ca=str(live / "ca.crt"))  # fmt: skip
    channel = open_channel(daemon.address, old.client_tls(), FRESH)
    stream = pb_grpc.PowerDaemonStub(channel).Subscribe(
        pb.SubscribeRequest(from_seq=0, max_batch=50), timeout=120
    )
    try:
        first = next(stream)
        _install(new, live)
        assert not _served(daemon.address, old.client_tls())  # new handshakes: new CA only
        assert _served(daemon.address, new.client_tls())
        # The stream opened before the change keeps delivering, in order, without a gap.
        seq = first.next_seq
        deadline = time.monotonic() + 30
        while seq < first.next_seq + 200:
            batch = next(stream)
            assert batch.first_seq == seq and batch.missed == 0
            seq = batch.next_seq
            assert time.monotonic() < deadline
        assert daemon.daemon.tls.reloads == 1
    finally:
        stream.cancel()
        channel.close()


def test_half_replaced_files_keep_the_previous_certificate(start_sim_daemon, two_sites):
    old, new, live = two_sites
    daemon = start_sim_daemon(tls_cert=str(live / "daemon.crt"), tls_key=str(live / "daemon.key"),
                              tls_client_ca=str(live / "ca.crt"))  # fmt: skip
    shutil.copy(new.daemon_cert, live / "daemon.crt")  # its key not yet: not a pair
    assert _served(daemon.address, old.client_tls())
    assert daemon.daemon.tls.reloads == 0
    shutil.copy(new.daemon_key, live / "daemon.key")
    shutil.copy(new.ca, live / "ca.crt")
    assert _served(daemon.address, new.client_tls())
    assert daemon.daemon.tls.reloads == 1


def test_sighup_rereads_the_files_and_keeps_serving(two_sites, tmp_path):
    old, new, live = two_sites
    port_file = tmp_path / "port"
    log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [PYTHON, "-m", "power_daemon", "serve", "--backend", "sim", "--no-rapl", "--listen",
         "127.0.0.1:0", "--port-file", str(port_file), "--marker-socket", "",
         "--tls-cert", str(live / "daemon.crt"), "--tls-key", str(live / "daemon.key"),
         "--tls-client-ca", str(live / "ca.crt")],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (
                tmp_path / "daemon.log"
            ).read_text()
            time.sleep(0.05)
        address = f"127.0.0.1:{int(port_file.read_text())}"
        assert _served(address, old.client_tls())
        _install(new, live)
        proc.send_signal(signal.SIGHUP)
        while "SIGHUP" not in (tmp_path / "daemon.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert _served(address, new.client_tls())
        assert not _served(address, old.client_tls())
        text = (tmp_path / "daemon.log").read_text()
        assert ", mTLS)" in text
        assert "TLS certificate reloaded" in text
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        log.close()
