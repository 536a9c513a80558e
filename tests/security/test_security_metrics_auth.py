"""/metrics behind the exporter toolkit's web config (TLS, client certificates, basic auth):
scraped by the real Prometheus, and checked with a plain HTTPS client."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import bcrypt
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, Gauge

from collector.cli import main as collector_main
from collector.config import CollectorConfig
from collector.errors import ConfigError
from collector.metrics.exporter import create_metrics_server
from collector.metrics.state import LiveState
from collector.service import create_collector
from parawatt_proto.webconfig import BasicAuth, MetricsHTTPServer, load_web_config
from tests.security.certs import make_certs
from tests.support.torchrun import free_port

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("pki") / "site", "node1")


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(8)).decode()


def _web_config(certs, path, client_ca: bool = False, users: dict | None = None) -> str:
    users = {"prometheus": _hash(PASSWORD)} if users is None else users
    lines = ["tls_server_config:", "  cert_file: metrics.crt", "  key_file: metrics.key"]
    if client_ca:
        lines += ["  client_ca_file: ca.crt", "  client_auth_type: RequireAndVerifyClientCert"]
    if users:
        lines += ["basic_auth_users:", *(f"  {u}: '{h}'" for u, h in users.items())]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _get(url: str, ctx: ssl.SSLContext | None, user: str = "", password: str = "") -> tuple:
    request = urllib.request.Request(url)
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("WWW-Authenticate", "")


def _client_ctx(certs, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if with_cert:
        ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return ctx


def test_tls_and_basic_auth_with_a_plain_https_client(certs):
    registry = CollectorRegistry()
    Gauge("parawatt_test_value", "a value", registry=registry).set(42)
    web = load_web_config(_web_config(certs, certs.dir / "web.yml"))
    server = MetricsHTTPServer(registry, "127.0.0.1", 0, web)
    url = f"https://127.0.0.1:{server.port}/metrics"
    try:
        ctx = _client_ctx(certs, with_cert=False)
        status, body = _get(url, ctx, "prometheus", PASSWORD)
        assert status == 200 and "parawatt_test_value 42.0" in body
        assert _get(url, ctx, "prometheus", "wrong") == (401, 'Basic realm="parawatt"')
        assert _get(url, ctx, "nobody", PASSWORD)[0] == 401
        assert _get(url, ctx)[0] == 401
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plaintext HTTP
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
    finally:
        server.close()


def test_changed_certificate_files_serve_new_connections(certs, tmp_path):
    import shutil as sh

    other = make_certs(tmp_path / "other", "node1")
    live = tmp_path / "live"
    live.mkdir()
    for name in ("metrics.crt", "metrics.key"):
        sh.copy(certs.dir / name, live / name)
    web = load_web_config(_web_config(certs, live / "web.yml", users={}))
    server = MetricsHTTPServer(CollectorRegistry(), "127.0.0.1", 0, web)
    url = f"https://127.0.0.1:{server.port}/metrics"
    try:
        assert _get(url, _client_ctx(certs, with_cert=False))[0] == 200
        for name in ("metrics.crt", "metrics.key"):
            sh.copy(other.dir / name, live / f".{name}")
            os.replace(live / f".{name}", live / name)
        assert _get(url, _client_ctx(other, with_cert=False))[0] == 200
        with pytest.raises(urllib.error.URLError):  # the old CA no longer fits
            _get(url, _client_ctx(certs, with_cert=False))
        assert server.tls.reloads == 1
    finally:
        server.close()


def test_verified_password_is_not_hashed_again():
    auth = BasicAuth({"u": _hash("pw").encode()})
    good = "Basic " + base64.b64encode(b"u:pw").decode()
    assert all(auth.check(good) for _ in range(50))
    assert auth.bcrypt_checks == 1
    assert not auth.check("Basic " + base64.b64encode(b"u:nope").decode())
    assert not auth.check("Basic " + base64.b64encode(b"ghost:pw").decode())
    assert auth.bcrypt_checks == 3  # wrong passwords and unknown users always cost a check
    assert not auth.check("Basic !!!") and not auth.check("Bearer x") and not auth.check("")


def test_client_certificate_required_when_configured(certs, tmp_path):
    registry = CollectorRegistry()
    web = load_web_config(_web_config(certs, certs.dir / "web-mtls.yml", client_ca=True, users={}))
    server = MetricsHTTPServer(registry, "127.0.0.1", 0, web)
    url = f"https://127.0.0.1:{server.port}/metrics"
    try:
        assert _get(url, _client_ctx(certs, with_cert=True))[0] == 200
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(
                url, context=_client_ctx(certs, with_cert=False), timeout=10
            ).read()
    finally:
        server.close()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("basic_auth_users:\n  u: plaintext\n", "is not a bcrypt hash"),
        ("tls_server_config:\n  cert_file: a.crt\n", "needs cert_file and key_file"),
        ("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n", "No such file"),
        ("http_server_config:\n  http2: true\n", "unsupported keys"),
        ("tls_server_config:\n  cert_file: metrics.crt\n  key_file: metrics.key\n"
         "  client_auth_type: RequireAndVerifyClientCert\n", "needs client_ca_file"),
        ("tls_server_config:\n  cert_file: metrics.crt\n  key_file: metrics.key\n"
         "  client_auth_type: RequestClientCert\n", "is not supported"),
        ("- a list\n", "expected a mapping"),
        ("a: [unclosed\n", "is not valid YAML"),
    ],
)  # fmt: skip
def test_bad_web_config_is_one_clear_error(certs, text, message):
    path = certs.dir / "bad-web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        create_metrics_server(LiveState(), "127.0.0.1:0", web_config=str(path))


def test_collector_serve_refuses_a_bad_web_config_before_starting(certs, tmp_path):
    path = certs.dir / "bad-cli.yml"
    path.write_text("basic_auth_users:\n  u: plaintext\n")
    result = CliRunner().invoke(collector_main, [
        "serve", "--daemon", "127.0.0.1:1", "--db", f"sqlite:///{tmp_path / 'x.db'}",
        "--metrics-listen", "127.0.0.1:0", "--metrics-web-config", str(path)])  # fmt: skip
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: web config {str(path)!r}: the password of user 'u' is not a bcrypt hash"
    ]
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    ("listen", "tls", "warns"),
    [("0.0.0.0:0", False, True), ("0.0.0.0:0", True, False), ("127.0.0.1:0", False, False)],
)
def test_non_loopback_metrics_without_tls_warns(certs, listen, tls, warns, caplog):
    caplog.set_level(logging.WARNING, logger="collector.metrics.exporter")
    web = _web_config(certs, certs.dir / "web-warn.yml") if tls else None
    server, _ = create_metrics_server(LiveState(), listen, web_config=web)
    server.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "collector.metrics.exporter"]
    assert len(lines) == (1 if warns else 0)
    if warns:
        assert "without TLS: anyone who can reach it" in lines[0]


# --- the real Prometheus ---------------------------------------------------------------------


def _api(port: int, path: str, **params) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _job(name: str, target: str, certs, password: str, client_cert: bool) -> str:
    tls = [f"      ca_file: {certs.ca}"]
    if client_cert:
        tls += [f"      cert_file: {certs.client_cert}", f"      key_file: {certs.client_key}"]
    return "\n".join([
        f"  - job_name: {name}", "    scheme: https", "    tls_config:", *tls,
        "    basic_auth:", "      username: prometheus", f"      password: '{password}'",
        "    static_configs:", f"      - targets: ['{target}']"])  # fmt: skip


@pytest.mark.slow
def test_real_prometheus_scrapes_through_tls_with_basic_auth(sim_daemon, certs, tmp_path):
    binary = shutil.which("prometheus")
    if not binary:
        pytest.skip("prometheus not installed (scripts/setup.sh installs Debian's package)")
    web = _web_config(certs, certs.dir / "web-prom.yml", client_ca=True)
    cfg = CollectorConfig(daemons=(sim_daemon.address,), db_url=f"sqlite:///{tmp_path / 'c.db'}",
                          metrics_listen="127.0.0.1:0", metrics_web_config=web)  # fmt: skip
    with create_collector(cfg) as collector:
        target = f"127.0.0.1:{collector.metrics_port}"
        config = "\n".join([
            "global:", "  scrape_interval: 1s", "scrape_configs:",
            _job("good", target, certs, PASSWORD, client_cert=True),
            _job("wrong-password", target, certs, "guess", client_cert=True),
            _job("no-client-cert", target, certs, PASSWORD, client_cert=False)]) + "\n"  # fmt: skip
        (tmp_path / "prometheus.yml").write_text(config)
        port = free_port()
        log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            targets = _wait_for_scrapes(port, proc, tmp_path / "prometheus.log")
            result = _api(port, "query", query='parawatt_device_power_watts{job="good"}')
            assert len(result["data"]["result"]) == 2  # both sim GPUs, through TLS + auth
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()
    assert targets["good"]["health"] == "up"
    assert targets["wrong-password"]["health"] == "down"
    assert "401 Unauthorized" in targets["wrong-password"]["lastError"]
    assert targets["no-client-cert"]["health"] == "down"
    # refused in the handshake, before HTTP (the port in the message may contain "401")
    assert "401 Unauthorized" not in targets["no-client-cert"]["lastError"]
    assert "certificate" in targets["no-client-cert"]["lastError"]


def _wait_for_scrapes(port: int, proc, log) -> dict:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            active = _api(port, "targets")["data"]["activeTargets"]
            targets = {t["labels"]["job"]: t for t in active}
            if len(targets) == 3 and all(t["health"] != "unknown" for t in targets.values()):
                good = _api(port, "query", query='parawatt_device_power_watts{job="good"}')
                if good["data"]["result"]:
                    return targets
        except OSError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.25)


def test_daemon_metrics_use_the_same_web_config(sim_daemon, certs):
    from power_daemon.serve.metrics import start_metrics_server

    web = _web_config(certs, certs.dir / "web-daemon.yml")
    server = start_metrics_server(sim_daemon.daemon.core, "127.0.0.1:0", None, web)
    url = f"https://127.0.0.1:{server.port}/metrics"
    try:
        ctx = _client_ctx(certs, with_cert=False)
        status, body = _get(url, ctx, "prometheus", PASSWORD)
        assert status == 200 and "parawatt_device_power_watts" in body
        assert _get(url, ctx, "prometheus", "wrong")[0] == 401
    finally:
        server.close()


def test_daemon_serve_refuses_a_bad_web_config_in_one_line(certs):
    import subprocess as sp

    from tests.support.torchrun import PYTHON, REPO

    path = certs.dir / "bad-daemon.yml"
    path.write_text("basic_auth_users:\n  u: plaintext\n")
    out = sp.run([PYTHON, "-m", "power_daemon", "serve", "--backend", "sim", "--listen",
                  "127.0.0.1:0", "--metrics-listen", "0", "--metrics-web-config", str(path)],
                 capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"power-daemon: error: web config {str(path)!r}: the password of user 'u' is not a "
        "bcrypt hash"
    ]
