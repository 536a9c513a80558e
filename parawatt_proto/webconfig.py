"""/metrics over HTTP(S) with the Prometheus exporter toolkit's web config: TLS and basic auth.

Shared by every parawatt service that serves /metrics (the collector today, the daemon's own
/metrics next), so it lives in the contract package: the services may not import each other.
The web-config file is the one node_exporter and friends read:

    tls_server_config:
      cert_file: metrics.crt          # relative paths are relative to the web-config file
      key_file: metrics.key
      client_ca_file: ca.crt          # optional: scrapers must present a certificate
      client_auth_type: RequireAndVerifyClientCert   # or VerifyClientCertIfGiven, NoClientCert
      min_version: TLS12              # optional: TLS12 (default) or TLS13
    basic_auth_users:
      prometheus: $2b$12$...          # bcrypt hash (htpasswd -nBC 12 "" | tr -d ':\\n')

The certificate files are re-read when they change, for new connections (as the exporter toolkit
does); the web-config file itself is read at start. Basic auth is checked with bcrypt
(deliberately ~100+ ms); a verified (user, password) pair is remembered under a keyed hash so
that a scrape every few seconds costs microseconds. Unknown users cost one bcrypt check too, so
timing does not tell which user names exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import bcrypt
import yaml
from prometheus_client import make_wsgi_app

from parawatt_proto.transport import is_loopback_host

log = logging.getLogger(__name__)

_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version"}
_CACHE_MAX = 256
HANDSHAKE_TIMEOUT_S = 10.0


class WebConfigError(ValueError):
    """A web-config file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class WebConfig:
    path: str = ""
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    client_auth: ssl.VerifyMode = ssl.CERT_NONE
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    users: dict[str, bytes] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = self.min_version
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file)
            if self.client_ca_file:
                ctx.load_verify_locations(self.client_ca_file)
        except (ssl.SSLError, OSError) as e:
            reason = getattr(e, "strerror", None) or getattr(e, "reason", None) or e
            raise WebConfigError(f"{self.path}: tls_server_config: {reason}") from None
        ctx.verify_mode = self.client_auth
        return ctx


def load_web_config(path: str | os.PathLike) -> WebConfig:
    path = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise WebConfigError(f"cannot read web config {path!r}: {e.strerror or e}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise WebConfigError(f"web config {path!r} is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise WebConfigError(f"web config {path!r}: expected a mapping at the top")
    unknown = set(doc) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise WebConfigError(f"web config {path!r}: unsupported keys {sorted(unknown)}")
    base = Path(path).parent
    return WebConfig(path=path, users=_users(path, doc.get("basic_auth_users")),
                     **_tls(path, base, doc.get("tls_server_config")))  # fmt: skip


def _tls(path: str, base: Path, tls) -> dict:
    if tls is None:
        return {}
    if not isinstance(tls, dict) or set(tls) - _TLS_KEYS:
        raise WebConfigError(
            f"web config {path!r}: tls_server_config takes only {', '.join(sorted(_TLS_KEYS))}"
        )
    if not tls.get("cert_file") or not tls.get("key_file"):
        raise WebConfigError(f"web config {path!r}: tls_server_config needs cert_file and key_file")
    auth_name = tls.get("client_auth_type") or (
        "RequireAndVerifyClientCert" if tls.get("client_ca_file") else "NoClientCert"
    )
    if auth_name not in _AUTH_TYPES:
        raise WebConfigError(
            f"web config {path!r}: client_auth_type {auth_name!r} is not supported "
            f"(use one of {', '.join(_AUTH_TYPES)})"
        )
    if _AUTH_TYPES[auth_name] != ssl.CERT_NONE and not tls.get("client_ca_file"):
        raise WebConfigError(
            f"web config {path!r}: client_auth_type {auth_name} needs client_ca_file"
        )
    version = tls.get("min_version", "TLS12")
    if version not in _VERSIONS:
        raise WebConfigError(f"web config {path!r}: min_version must be TLS12 or TLS13")
    resolve = lambda p: str(base / p) if p else None  # noqa: E731
    return dict(
        cert_file=resolve(tls["cert_file"]),
        key_file=resolve(tls["key_file"]),
        client_ca_file=resolve(tls.get("client_ca_file")),
        client_auth=_AUTH_TYPES[auth_name],
        min_version=_VERSIONS[version],
    )


def _users(path: str, users) -> dict[str, bytes]:
    if users is None:
        return {}
    if not isinstance(users, dict):
        raise WebConfigError(f"web config {path!r}: basic_auth_users must map user to bcrypt hash")
    out = {}
    for user, hashed in users.items():
        h = str(hashed).encode()
        if not (len(h) == 60 and h[:4] in (b"$2a$", b"$2b$", b"$2y$")):
            raise WebConfigError(
                f"web config {path!r}: the password of user {str(user)!r} is not a bcrypt hash"
            )
        out[str(user)] = h
    return out


class BasicAuth:
    """Checks an Authorization header against bcrypt hashes, remembering verified pairs."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = users
        self._key = secrets.token_bytes(32)
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()
        self.bcrypt_checks = 0  # how often bcrypt ran (a cached pair costs none)
        # Same cost as the real hashes, so an unknown user takes as long as a wrong password.
        cost = next(iter(users.values()))[4:6] if users else b"10"
        self._dummy = bcrypt.hashpw(b"parawatt", b"$2b$" + cost + bcrypt.gensalt()[6:])

    def check(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user_b, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        user = user_b.decode("utf-8", "replace")
        hashed = self._users.get(user)
        if not sep or hashed is None:
            self._bcrypt(password, self._dummy)
            return False
        token = hmac.new(self._key, user_b + b"\0" + password, hashlib.sha256).digest()
        with self._lock:
            if token in self._verified:
                return True
        if not self._bcrypt(password, hashed):
            return False
        with self._lock:
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()
            self._verified.add(token)
        return True

    def _bcrypt(self, password: bytes, hashed: bytes) -> bool:
        self.bcrypt_checks += 1
        return bcrypt.checkpw(password, hashed)


def metrics_app(registry, web: WebConfig | None):
    """prometheus_client's WSGI app, behind basic auth when the web config has users."""
    inner = make_wsgi_app(registry)
    if web is None or not web.users:
        return inner
    auth = BasicAuth(web.users)

    def app(environ, start_response):
        if not auth.check(environ.get("HTTP_AUTHORIZATION", "")):
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="parawatt"'), ("Content-Type", "text/plain")],
            )
            return [b"Unauthorized\n"]
        return inner(environ, start_response)

    return app


class _Handler(WSGIRequestHandler):
    timeout = 30.0  # a client that stops talking does not hold a thread for ever

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.settimeout(HANDSHAKE_TIMEOUT_S)
            self.connection.do_handshake()  # here, in this request's thread, not in accept()
            self.connection.settimeout(self.timeout)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib's name)
        pass


class _TLSFiles:
    """The server's SSL context, rebuilt when its files change (as the exporter toolkit reads
    them per connection): new connections get the new certificate, open ones keep theirs."""

    def __init__(self, web: WebConfig) -> None:
        self._web = web
        self._stamp = self._file_stamp()
        self.context = web.ssl_context()
        self.reloads = 0

    def _file_stamp(self) -> tuple:
        out = []
        for path in (self._web.cert_file, self._web.key_file, self._web.client_ca_file):
            try:
                st = os.stat(path) if path else None
                out.append(st and (st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def current(self) -> ssl.SSLContext:
        stamp = self._file_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.context = self._web.ssl_context()
                self.reloads += 1
                log.info("/metrics TLS certificate reloaded from %s", self._web.cert_file)
            except WebConfigError as e:
                log.warning("/metrics TLS files changed but cannot be used yet (%s)", e)
        return self.context


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    tls: _TLSFiles | None = None

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls is not None:
            sock = self.tls.current().wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr

    def handle_error(self, request, client_address) -> None:
        # A failed handshake or a dropped scraper is the client's business: one debug line.
        log.debug("metrics request from %s failed", client_address[0], exc_info=True)


class MetricsHTTPServer:
    """/metrics on HOST:PORT in a thread of its own; close() stops it."""

    def __init__(self, registry, host: str, port: int, web: WebConfig | None = None) -> None:
        self.tls = _TLSFiles(web) if web is not None and web.tls else None
        self.scheme = "https" if self.tls else "http"
        host = host.strip("[]")
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("_Server", (_Server,), {"address_family": family})
        self._httpd = make_server(host, port, metrics_app(registry, web),
                                  server_class=server_class, handler_class=_Handler)  # fmt: skip
        self._httpd.tls = self.tls
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def serve_registry(
    registry,
    host: str,
    port: int,
    listen: str,
    web_config: str | os.PathLike | None,
    exposes: str,
    logger: logging.Logger = log,
) -> MetricsHTTPServer:
    """/metrics for `registry` on host:port, with the web config's TLS and basic auth if given.
    A bad web config or an address that cannot be served raises WebConfigError (one line); a
    non-loopback listener without TLS logs one warning naming what it `exposes`."""
    try:
        web = load_web_config(web_config) if web_config else None
        server = MetricsHTTPServer(registry, host, port, web)
    except OSError as exc:
        raise WebConfigError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from None
    if not is_loopback_host(host) and (web is None or not web.tls):
        logger.warning(
            "serving /metrics on %s without TLS: anyone who can reach it reads %s "
            "(give --metrics-web-config)",
            listen,
            exposes,
        )
    return server
