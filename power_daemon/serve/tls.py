"""Server-side TLS of the daemon: certificate files that reload without a restart.

grpcio's dynamic server credentials ask a fetcher for the certificate configuration at every new
TLS handshake. The fetcher here returns a new configuration when the certificate, key or client
CA file changed (mtime, size or inode) or after SIGHUP, and None (keep the current one) otherwise.
What grpcio allows: new connections use the new files; connections already open keep the
certificate they were made with, so their streams continue untouched. There is no way to
re-handshake an open connection, and the listening port cannot switch between TLS and plaintext
(nor turn client authentication on or off) without a restart.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass

import grpc

from power_daemon.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerTLS:
    cert: str
    key: str
    client_ca: str | None = None  # given: only clients with a certificate signed by it are served

    def files(self) -> tuple[str, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"cannot read TLS {what} {path!r}: {e.strerror or e}") from None


def load_configuration(tls: ServerTLS):
    """Read and check the files (a key that does not match its certificate fails here, with
    the file names, rather than in every handshake); -> grpc's certificate configuration."""
    cert, key = _read(tls.cert, "certificate"), _read(tls.key, "key")
    ca = _read(tls.client_ca, "client CA") if tls.client_ca else None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(tls.cert, tls.key)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(
            f"TLS certificate {tls.cert!r} and key {tls.key!r} do not form a usable pair: "
            f"{getattr(e, 'reason', None) or e}"
        ) from None
    if ca is not None:
        try:
            ctx.load_verify_locations(cadata=ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as e:
            raise ConfigError(
                f"TLS client CA {tls.client_ca!r} holds no usable certificate: {e}"
            ) from None
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


class ReloadingCredentials:
    """grpc server credentials whose certificate follows the files (see the module docstring)."""

    def __init__(self, tls: ServerTLS) -> None:
        self.tls = tls
        self._stamp = self._file_stamp()
        self._lock = threading.Lock()
        self._force = False
        self.reloads = 0
        self.credentials = grpc.dynamic_ssl_server_credentials(
            load_configuration(tls),
            self._fetch,
            require_client_authentication=tls.client_ca is not None,
        )

    def reload(self) -> None:
        """Read the files again at the next handshake, changed or not (SIGHUP)."""
        with self._lock:
            self._force = True

    def _file_stamp(self) -> tuple:
        out = []
        for path in self.tls.files():
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def _fetch(self):
        """Called by grpc at each new handshake: a stat per file, a read only on change."""
        stamp = self._file_stamp()
        with self._lock:
            if stamp == self._stamp and not self._force:
                return None
            self._stamp, self._force = stamp, False
        try:
            config = load_configuration(self.tls)
        except ConfigError as e:
            # Half-written files (a cert copied before its key) are common: keep serving with
            # the previous certificate and try again when the files change next.
            log.warning(
                "TLS files changed but cannot be used yet (%s); keeping the previous ones", e
            )
            return None
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.tls.cert)
        return config
