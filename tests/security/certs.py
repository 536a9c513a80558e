"""Certificates for the transport-security tests, made by the shipped deploy/make-certs.sh.

certs = make_certs(tmp_path / "site-a")     # certs.ca, certs.daemon_cert, ... (Paths)
certs.client_tls("client")                  # ClientTLS with that client's cert and key
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc

from parawatt_proto.transport import ClientTLS
from tests.support.torchrun import REPO

MAKE_CERTS = REPO / "deploy" / "make-certs.sh"
# A fresh connection per channel: gRPC otherwise shares one between channels with equal
# arguments, and a test about handshakes needs a handshake.
FRESH = [("grpc.use_local_subchannel_pool", 1)]


@dataclass(frozen=True)
class Certs:
    dir: Path

    def __getattr__(self, name: str) -> Path:  # ca, daemon_cert, daemon_key, client_cert, ...
        stem, _, part = name.rpartition("_")
        if not stem:
            return self.dir / f"{name}.crt"
        return self.dir / f"{stem}.{'crt' if part == 'cert' else 'key'}"

    def client_tls(self, who: str | None = "client") -> ClientTLS:
        if who is None:
            return ClientTLS(ca=self.dir / "ca.crt")
        return ClientTLS(ca=self.dir / "ca.crt", cert=self.dir / f"{who}.crt",
                         key=self.dir / f"{who}.key")  # fmt: skip

    def daemon_config(self, mutual: bool = True) -> dict:
        return dict(tls_cert=str(self.daemon_cert), tls_key=str(self.daemon_key),
                    tls_client_ca=str(self.ca) if mutual else None)  # fmt: skip


def make_certs(out: Path, *names: str) -> Certs:
    proc = subprocess.run(["bash", str(MAKE_CERTS), str(out), *(names or ("node1",))],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return Certs(out)


def health_check(channel: grpc.Channel, timeout_s: float = 10.0) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s).status
