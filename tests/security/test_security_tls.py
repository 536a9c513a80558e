"""gRPC TLS and mutual TLS between the daemon and its clients (probe, collector), on loopback.

A real daemon (sim backend) serves TLS with certificates from deploy/make-certs.sh; clients are
the real probe CLI, the real collector and plain gRPC channels built by parawatt_proto.transport.
"""

from __future__ import annotations

import logging
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from collector.config import CollectorConfig
from collector.errors import UnknownRunError
from collector.service import create_collector
from collector.store import queries
from parawatt_proto.transport import ClientTLS, describe_rpc_error, open_channel
from power_daemon.config import DaemonConfig
from power_daemon.errors import ConfigError
from power_daemon.serve.server import create_server
from tests.collector.drive import run_job
from tests.security.certs import FRESH, health_check, make_certs
from tests.support.torchrun import PYTHON, REPO

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("pki") / "site", "node1", "10.1.2.3")


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory):
    """A second CA: its certificates must be worth nothing to the first site's daemons."""
    return make_certs(tmp_path_factory.mktemp("pki-other") / "site", "node1")


@pytest.fixture
def mtls_daemon(start_sim_daemon, certs, tmp_path):
    return start_sim_daemon(**certs.daemon_config(), marker_socket=str(tmp_path / "m.sock"))


def _refused(address: str, tls) -> str:
    """The call fails as UNAVAILABLE; -> the one line a parawatt client says about it."""
    with open_channel(address, tls, FRESH) as channel, pytest.raises(grpc.RpcError) as info:
        health_check(channel, timeout_s=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    return describe_rpc_error(address, info.value, tls)


def test_mtls_client_is_served_and_the_local_socket_needs_no_certificate(mtls_daemon, certs):
    with open_channel(mtls_daemon.address, certs.client_tls(), FRESH) as channel:
        assert health_check(channel) == SERVING
    with open_channel(f"unix:{mtls_daemon.daemon.marker_socket}") as channel:
        assert health_check(channel) == SERVING


def test_plaintext_client_is_refused_by_a_tls_daemon(mtls_daemon):
    assert "closed the connection: it may require TLS" in _refused(mtls_daemon.address, None)


def test_mtls_daemon_refuses_a_client_without_certificate(mtls_daemon, certs):
    line = _refused(mtls_daemon.address, certs.client_tls(None))
    assert "may require a client certificate signed by its client CA" in line


def test_mtls_daemon_refuses_a_certificate_of_another_ca(mtls_daemon, certs, other_certs):
    foreign = ClientTLS(ca=certs.ca, cert=other_certs.client_cert, key=other_certs.client_key)
    line = _refused(mtls_daemon.address, foreign)
    assert f"did not accept the client certificate {str(other_certs.client_cert)!r}" in line


def test_client_refuses_a_daemon_certificate_of_another_ca(mtls_daemon, other_certs):
    line = _refused(mtls_daemon.address, other_certs.client_tls())
    assert "the daemon's certificate is not signed by the given CA bundle" in line


def test_tls_client_of_a_plaintext_daemon_is_told_so(sim_daemon, certs):
    line = _refused(sim_daemon.address, certs.client_tls())
    assert "TLS handshake failed: the daemon does not speak TLS" in line


def test_tls_without_client_ca_serves_any_tls_client_but_not_plaintext(start_sim_daemon, certs):
    daemon = start_sim_daemon(**certs.daemon_config(mutual=False))
    with open_channel(daemon.address, certs.client_tls(None), FRESH) as channel:
        assert health_check(channel) == SERVING
    _refused(daemon.address, None)


def _probe(address: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "power_daemon", "probe", "--daemon", address, "--count", "1", *args],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )  # fmt: skip


def test_probe_says_in_one_line_what_is_missing(mtls_daemon, certs):
    plain = _probe(mtls_daemon.address)
    assert plain.returncode == 1
    assert plain.stderr.splitlines() == [
        f"power-daemon: error: daemon at {mtls_daemon.address}: closed the connection: it may "
        "require TLS (give --tls-ca, or PARAWATT_TLS_CA, and a client certificate for mutual TLS)"
    ]
    no_cert = _probe(mtls_daemon.address, "--tls-ca", str(certs.ca))
    assert no_cert.returncode == 1
    assert "may require a client certificate" in no_cert.stderr
    missing = _probe(mtls_daemon.address, "--tls-ca", str(certs.dir / "nope.crt"))
    assert missing.returncode == 2 and "cannot read TLS CA bundle" in missing.stderr
    half = _probe(
        mtls_daemon.address, "--tls-ca", str(certs.ca), "--tls-cert", str(certs.client_cert)
    )
    assert half.returncode == 2 and "needs its key" in half.stderr


def test_probe_reads_tls_options_from_the_environment(mtls_daemon, certs):
    import os

    env = dict(os.environ, PARAWATT_TLS_CA=str(certs.ca), PARAWATT_TLS_CERT=str(certs.client_cert),
               PARAWATT_TLS_KEY=str(certs.client_key))  # fmt: skip
    out = _probe(mtls_daemon.address, env=env)
    assert out.returncode == 0, out.stderr
    assert "backend sim" in out.stdout and "sim-GPU-" in out.stdout


def test_server_name_override_reaches_a_daemon_by_another_name(mtls_daemon, certs):
    from dataclasses import replace

    tls = replace(certs.client_tls(), server_name="node1")
    with open_channel(mtls_daemon.address, tls, FRESH) as channel:
        assert health_check(channel) == SERVING
    line = _refused(mtls_daemon.address, replace(certs.client_tls(), server_name="node9"))
    assert "the daemon's certificate does not name this host" in line


def test_collector_ingests_through_mtls(mtls_daemon, certs, tmp_path):
    cfg = CollectorConfig(daemons=(mtls_daemon.address,), db_url=f"sqlite:///{tmp_path / 'c.db'}",
                          metrics_listen=None, late_bound_s=0.5, flush_interval_s=0.1,
                          tls=certs.client_tls("collector"))  # fmt: skip
    with create_collector(cfg) as collector:
        # The job's markers go in through the local socket, readings out through mTLS.
        run_job(f"unix:{mtls_daemon.daemon.marker_socket}", "mtls-run", epochs=1, steps=3)
        assert collector.flush()
        run = _wait_for_run(collector, "mtls-run")
    assert run is not None and run.status == "completed" and run.energy_j > 0
    assert collector.subscribers[0].health.readings_total > 0


def _wait_for_run(collector, run_id: str, timeout_s: float = 30.0):
    """The run's summary once it is complete in SQL (the join waits a little for late readings)."""
    deadline = time.monotonic() + timeout_s
    while True:
        collector.flush()
        try:
            run = queries.run_summary(collector.engine, run_id)
        except UnknownRunError:
            run = None
        if (run is not None and run.status == "completed" and run.energy_j) or (
            time.monotonic() > deadline
        ):
            return run
        time.sleep(0.2)


def test_collector_without_client_certificate_logs_one_clear_line(
    mtls_daemon, certs, tmp_path, caplog
):
    cfg = CollectorConfig(daemons=(mtls_daemon.address,), db_url=f"sqlite:///{tmp_path / 'c.db'}",
                          metrics_listen=None, tls=certs.client_tls(None),
                          reconnect_backoff_s=(0.1, 0.2))  # fmt: skip
    caplog.set_level(logging.WARNING, logger="collector.ingest.subscriber")
    with create_collector(cfg) as collector:
        sub = collector.subscribers[0]
        _wait(lambda: sub.health.reconnects_total >= 3)
        assert not sub.health.up and sub.health.readings_total == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "collector.ingest.subscriber"]
    # The same failure, again and again, is logged once.
    reason = (
        "closed the connection: it may require a client certificate signed by its client CA "
        "(give --tls-cert/--tls-key or PARAWATT_TLS_CERT/PARAWATT_TLS_KEY)"
    )
    assert lines == [f"daemon {mtls_daemon.address}: {reason!r} (reconnecting)"]  # escaped


def _wait(cond, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(tls_cert="x.crt"), "--tls-cert and --tls-key go together"),
        (dict(tls_client_ca="ca.crt"), "--tls-client-ca needs --tls-cert"),
    ],
)
def test_inconsistent_tls_options_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        DaemonConfig(listen="127.0.0.1:0", backend="sim", rapl="off", **overrides)


def test_unusable_tls_files_are_refused_at_start(certs, other_certs, tmp_path):
    (tmp_path / "junk.crt").write_text("not a certificate\n")
    cases = [
        (dict(tls_cert=str(tmp_path / "none.crt"), tls_key=str(certs.daemon_key)),
         "cannot read TLS certificate"),
        (dict(tls_cert=str(certs.daemon_cert), tls_key=str(other_certs.daemon_key)),
         "do not form a usable pair"),
        (dict(tls_cert=str(certs.daemon_cert), tls_key=str(certs.daemon_key),
              tls_client_ca=str(tmp_path / "junk.crt")), "holds no usable certificate"),
    ]  # fmt: skip
    for overrides, message in cases:
        config = DaemonConfig(listen="127.0.0.1:0", backend="sim", rapl="off", **overrides)
        with pytest.raises(ConfigError, match=message):
            create_server(config)


@pytest.mark.parametrize(
    ("listen", "tls", "warned"),
    [("0.0.0.0:0", None, "without TLS"), ("0.0.0.0:0", "tls", "without --tls-client-ca"),
     ("0.0.0.0:0", "mtls", None), ("127.0.0.1:0", None, None), ("[::1]:0", None, None)],
)  # fmt: skip
def test_non_loopback_listener_without_mtls_warns_once(listen, tls, warned, certs, caplog):
    caplog.set_level(logging.WARNING, logger="power_daemon.serve.server")
    extra = {} if tls is None else certs.daemon_config(mutual=tls == "mtls")
    server, _ = create_server(DaemonConfig(listen=listen, backend="sim", rapl="off", **extra))
    server.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "power_daemon.serve.server"]
    if warned is None:
        assert lines == []
    else:
        assert len(lines) == 1 and warned in lines[0] and "anyone who can reach" in lines[0]
