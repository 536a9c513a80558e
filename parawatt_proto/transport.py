"""How every client reaches a power daemon: address parsing and the gRPC channel, plain or TLS.

One place for the daemon address grammar and the client side of TLS, shared by the collector,
`power-daemon probe`, the sweep's cool-down client, the trainer and the `parawatt` client library
(they may not import each other; they all import the contract package).

Addresses: ``host:port``, ``[ipv6]:port`` or ``unix:PATH`` (a Unix domain socket; local marker
intake). A malformed address raises `AddressError` with a message fit for a CLI user.

TLS: `ClientTLS` names a CA bundle that signs the daemon's certificate and, for mutual TLS, the
client's own certificate and key. Unix sockets never use TLS (their file mode says who may
connect). `ClientTLS.from_env()` reads ``PARAWATT_TLS_CA``, ``PARAWATT_TLS_CERT``,
``PARAWATT_TLS_KEY`` and ``PARAWATT_TLS_SERVER_NAME``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

MAX_ADDRESS_LEN = 255
# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH_BYTES = 107
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,252})$")

ENV_CA = "PARAWATT_TLS_CA"
ENV_CERT = "PARAWATT_TLS_CERT"
ENV_KEY = "PARAWATT_TLS_KEY"
ENV_SERVER_NAME = "PARAWATT_TLS_SERVER_NAME"


class AddressError(ValueError):
    """A daemon address that cannot be used; the message names the address and why."""


class TLSConfigError(ValueError):
    """TLS files missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class Target:
    """A parsed daemon address. `grpc_target` is what grpc.*_channel() takes."""

    address: str
    grpc_target: str
    is_unix: bool
    host: str = ""
    port: int = 0

    def is_loopback(self) -> bool:
        return self.is_unix or is_loopback_host(self.host)


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback addresses (also '[::1]'): where a listener is private."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_target(address: str) -> Target:
    """Parse ``host:port``, ``[v6]:port`` or ``unix:PATH``; raise `AddressError` if malformed."""
    if not isinstance(address, str) or not address:
        raise AddressError("empty daemon address (expected HOST:PORT or unix:PATH)")
    shown = repr(address[:80])
    if len(address) > MAX_ADDRESS_LEN:
        raise AddressError(f"daemon address {shown}... is longer than {MAX_ADDRESS_LEN} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in address):
        raise AddressError(f"daemon address {shown} contains whitespace or control characters")
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]  # unix:///abs/path (gRPC's URI form)
        if not path:
            raise AddressError(f"daemon address {shown} has no socket path after 'unix:'")
        if len(os.fsencode(path)) > MAX_UNIX_PATH_BYTES:
            raise AddressError(
                f"socket path in {shown} is longer than {MAX_UNIX_PATH_BYTES} bytes (a Unix limit)"
            )
        return Target(address=address, grpc_target=f"unix:{path}", is_unix=True)
    host, sep, port_s = address.rpartition(":")
    if not sep or not host:
        raise AddressError(f"daemon address {shown} is not HOST:PORT or unix:PATH")
    if host.startswith("["):
        if not host.endswith("]"):
            raise AddressError(f"daemon address {shown}: unbalanced '[' in an IPv6 address")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise AddressError(f"daemon address {shown}: {host} is not an IPv6 address") from None
        bare = host[1:-1]
    else:
        if ":" in host:
            raise AddressError(f"daemon address {shown}: write an IPv6 address as [ADDR]:PORT")
        if not _HOST_RE.match(host):
            raise AddressError(f"daemon address {shown}: {host!r} is not a valid host name")
        bare = host
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise AddressError(f"daemon address {shown}: port must be a number from 1 to 65535")
    return Target(address=address, grpc_target=address, is_unix=False, host=bare, port=int(port_s))


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read TLS {what} {str(path)!r}: {exc.strerror}") from None


@dataclass(frozen=True)
class ClientTLS:
    """Client-side TLS: `ca` verifies the daemon; `cert` + `key` authenticate this client (mTLS)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    # Expected name in the daemon's certificate when it differs from the address's host.
    server_name: str = ""

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise TLSConfigError(
                "a TLS client certificate needs its key, and a key its certificate"
            )

    @property
    def enabled(self) -> bool:
        return self.ca is not None or self.cert is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientTLS | None:
        env = os.environ if env is None else env

        def path(name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else None

        tls = cls(
            ca=path(ENV_CA),
            cert=path(ENV_CERT),
            key=path(ENV_KEY),
            server_name=env.get(ENV_SERVER_NAME, ""),
        )
        return tls if tls.enabled else None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "CA bundle"),
            private_key=_read(self.key, "client key"),
            certificate_chain=_read(self.cert, "client certificate"),
        )


def open_channel(
    address: str | Target,
    tls: ClientTLS | None = None,
    options: Sequence[tuple[str, object]] = (),
) -> grpc.Channel:
    """A channel to a daemon: TLS when `tls` is enabled and the address is TCP, else plaintext."""
    target = address if isinstance(address, Target) else parse_target(address)
    opts = list(options)
    if tls is not None and tls.enabled and not target.is_unix:
        if tls.server_name:
            opts.append(("grpc.ssl_target_name_override", tls.server_name))
        return grpc.secure_channel(target.grpc_target, tls.credentials(), options=opts)
    return grpc.insecure_channel(target.grpc_target, options=opts)


_CLOSED = ("Socket closed", "Connection reset", "End of TCP stream", "Broken pipe")
# What an OpenSSL reason in gRPC's message means for the user of a client.
_HANDSHAKE_HINTS = {
    "WRONG_VERSION_NUMBER": "the daemon does not speak TLS (drop the TLS CA option, or give the "
    "daemon --tls-cert/--tls-key)",
    "CERTIFICATE_VERIFY_FAILED": "the daemon's certificate is not signed by the given CA bundle",
    "Hostname Verification": "the daemon's certificate does not name this host (give the name "
    "it holds with --tls-server-name or PARAWATT_TLS_SERVER_NAME)",
}


def describe_rpc_error(address: str, exc: grpc.RpcError, tls: ClientTLS | None) -> str:
    """One line for a failed call: ``daemon at ADDRESS: <rpc_error_reason>``."""
    return f"daemon at {address}: {rpc_error_reason(address, exc, tls)}"


def rpc_error_reason(address: str, exc: grpc.RpcError, tls: ClientTLS | None) -> str:
    """Why a call failed, naming the likely TLS mistake when the failure looks like one (a TLS
    daemon simply closes a connection that does not handshake as it requires)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    name = code.name if code is not None else "UNKNOWN"
    secure = tls is not None and tls.enabled and not address.startswith("unix:")
    if code == grpc.StatusCode.UNAVAILABLE:
        for needle, hint in _HANDSHAKE_HINTS.items():
            if needle in details:
                return f"TLS handshake failed: {hint}"
        if any(s in details for s in _CLOSED):
            if not secure:
                hint = (
                    "it may require TLS (give --tls-ca, or PARAWATT_TLS_CA, and a client "
                    "certificate for mutual TLS)"
                )
            elif tls.cert is None:
                hint = (
                    "it may require a client certificate signed by its client CA "
                    "(give --tls-cert/--tls-key or PARAWATT_TLS_CERT/PARAWATT_TLS_KEY)"
                )
            else:
                hint = (
                    f"it did not accept the client certificate {str(tls.cert)!r} "
                    "(not signed by its client CA?)"
                )
            return f"closed the connection: {hint}"
    short = details.replace("failed to connect to all addresses; last error: ", "")
    return f"{name}: {short}"
