"""Markers come from the node's own processes (DESIGN.md's trust boundary): by default the
daemon takes them on its Unix socket and from loopback TCP only; a peer from the network gets
PERMISSION_DENIED (counted, logged once a minute) while it may still subscribe to readings."""

from __future__ import annotations

import socket
import time

import grpc
import pytest

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto import parawatt_pb2_grpc as pb_grpc
from power_daemon.config import DaemonConfig
from power_daemon.errors import ConfigError
from power_daemon.serve.server import create_server
from power_daemon.serve.service import marker_peer_allowed

SIM = dict(backend="sim", rapl="off")


@pytest.mark.parametrize(
    ("peer", "local", "socket_only"),
    [
        ("unix:/run/parawatt/marker.sock", True, True),
        ("unix:", True, True),
        ("ipv4:127.0.0.1:50000", True, False),
        ("ipv4:127.9.9.9:50000", True, False),
        ("ipv6:[::1]:50000", True, False),
        ("ipv6:[::ffff:127.0.0.1]:50000", True, False),
        ("ipv4:10.1.2.3:50000", False, False),
        ("ipv6:[fd00::2]:50000", False, False),
        ("ipv6:[::ffff:10.1.2.3]:50000", False, False),
        ("garbage", False, False),
        ("", False, False),
    ],
)
def test_which_peers_may_send_markers(peer, local, socket_only):
    assert marker_peer_allowed(peer, "local") is local
    assert marker_peer_allowed(peer, "socket") is socket_only
    assert marker_peer_allowed(peer, "any") is True


def _own_address() -> str | None:
    """An address of this host that is not loopback (the daemon listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: picks the outgoing interface
            host = s.getsockname()[0]
        except OSError:
            return None
    return None if host.startswith("127.") else host


def _send(address: str) -> grpc.RpcError | pb.MarkerAck:
    m = pb.Marker(run_id="net", kind=pb.RUN_START, time_ns=time.time_ns())
    with grpc.insecure_channel(address) as channel:
        try:
            return pb_grpc.PowerDaemonStub(channel).SendMarkers(pb.MarkerBatch(markers=[m]),
                                                                timeout=10)  # fmt: skip
        except grpc.RpcError as e:
            return e


def test_a_network_peer_may_read_but_not_send_markers(tmp_path, caplog):
    host = _own_address()
    if host is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    sock = tmp_path / "m.sock"
    server, port = create_server(DaemonConfig(listen="0.0.0.0:0", marker_socket=str(sock), **SIM))
    with server.start():
        refused = _send(f"{host}:{port}")
        assert isinstance(refused, grpc.RpcError)
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "--markers-from local" in refused.details()
        assert isinstance(_send(f"127.0.0.1:{port}"), pb.MarkerAck)  # loopback: this node
        assert isinstance(_send(f"unix:{sock}"), pb.MarkerAck)
        with grpc.insecure_channel(f"{host}:{port}") as channel:  # readings stay readable
            info = pb_grpc.PowerDaemonStub(channel).GetInfo(pb.GetInfoRequest(), timeout=10)
        assert info.devices
        assert server.core.invalid_requests_total == 1
    assert "markers are taken from this node's own processes only" in caplog.text


def test_socket_only_refuses_loopback_tcp(tmp_path):
    sock = tmp_path / "m.sock"
    server, port = create_server(
        DaemonConfig(listen="127.0.0.1:0", marker_socket=str(sock), markers_from="socket", **SIM)
    )
    with server.start():
        refused = _send(f"127.0.0.1:{port}")
        assert isinstance(refused, grpc.RpcError)
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        assert isinstance(_send(f"unix:{sock}"), pb.MarkerAck)


def test_markers_from_is_checked_at_start():
    with pytest.raises(ConfigError, match="markers_from must be one of"):
        DaemonConfig(markers_from="everyone", **SIM)
    with pytest.raises(ConfigError, match="needs a --marker-socket"):
        DaemonConfig(markers_from="socket", **SIM)
