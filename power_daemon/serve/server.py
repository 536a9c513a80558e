"""create_server(config, backend) -> (server, port): the daemon, built apart from serving."""

from __future__ import annotations

import logging
import os
import socket
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from parawatt_proto.transport import is_loopback_host
from power_daemon.backends.base import Backend
from power_daemon.backends.factory import build_backend, node_hostname
from power_daemon.config import DaemonConfig, parse_listen
from power_daemon.daemon import Daemon
from power_daemon.errors import ConfigError
from power_daemon.serve import codec, local_socket
from power_daemon.serve.service import SERVICE_NAME, PowerDaemonService, method_handlers
from power_daemon.serve.tls import ReloadingCredentials, ServerTLS

log = logging.getLogger(__name__)

# Every follower holds a worker thread for the life of its stream (at most max_streams of them);
# these many more serve the short RPCs (SendMarkers above all) and turn extra streams away.
SPARE_WORKERS = 16


class DaemonServer:
    """The gRPC server around a Daemon core. start() begins sampling and serving; close() stops
    both, ends every stream cleanly, and closes the backend (it owns it)."""

    def __init__(self, config: DaemonConfig, backend: Backend | None = None) -> None:
        self.config = config
        host, _ = parse_listen(config.listen)
        try:
            check_bindable(config.listen)  # before a backend (NVML) is started for nothing
        except ConfigError:
            if backend is not None:
                backend.close()
            raise
        self.backend = backend if backend is not None else build_backend(config)
        self.core = Daemon(config, self.backend, node_hostname(config), codec.encode_reading)
        self._pool = futures.ThreadPoolExecutor(
            max_workers=config.max_streams + SPARE_WORKERS, thread_name_prefix="grpc"
        )
        self._grpc = grpc.server(
            self._pool,
            options=[("grpc.so_reuseport", 0)],  # a second daemon on a taken port must fail
        )
        self.service = PowerDaemonService(self.core)
        self._grpc.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE_NAME, method_handlers(self.service))]
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc
        )
        self.tls: ReloadingCredentials | None = None
        self.marker_socket: str | None = None
        self._socket_inode = 0
        try:
            self.port = self._add_ports(config)
        except (RuntimeError, ConfigError) as e:
            self.backend.close()
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"cannot listen on {config.listen}: {e}") from None
        self.address = f"{host}:{self.port}"
        if not is_loopback_host(host) and (self.tls is None or not config.tls_client_ca):
            log.warning(
                "listening on %s %s: anyone who can reach this port can read this node's "
                "power readings and send markers (give --tls-cert, --tls-key and "
                "--tls-client-ca for mutual TLS)",
                config.listen,
                "without TLS" if self.tls is None else "without --tls-client-ca",
            )
        self._closed = False

    def _add_ports(self, config: DaemonConfig) -> int:
        if config.tls_cert is not None:
            self.tls = ReloadingCredentials(
                ServerTLS(config.tls_cert, config.tls_key, config.tls_client_ca)
            )
            port = self._grpc.add_secure_port(config.listen, self.tls.credentials)
        else:
            port = self._grpc.add_insecure_port(config.listen)
        if config.marker_socket:
            auto = config.marker_socket == local_socket.AUTO
            path = local_socket.default_path() if auto else config.marker_socket
            path = path and local_socket.prepare(path, auto)
            if path:
                group = config.marker_socket_group
                gid = local_socket.group_id(group) if group is not None else None
                # Created 0660 (not the umask's 0755 first): no window for other users.
                umask = os.umask(0o117)
                try:
                    self._grpc.add_insecure_port(f"unix:{path}")
                finally:
                    os.umask(umask)
                self.marker_socket = path
                self._socket_inode = os.stat(path).st_ino
                try:
                    local_socket.restrict(path, gid)
                except ConfigError:
                    local_socket.remove(path, self._socket_inode)
                    raise
        return port

    @property
    def boot_id(self) -> str:
        return self.core.boot_id

    def reload_tls(self) -> None:
        """SIGHUP: read the TLS files again at the next handshake (they are also re-read by
        themselves when they change); open streams keep their connection."""
        if self.tls is not None:
            self.tls.reload()

    def start(self) -> DaemonServer:
        self.core.start()
        self._grpc.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.health.enter_graceful_shutdown()
        self.core.close()  # followers drain what is buffered and return
        self._grpc.stop(self.config.grace_s).wait()
        self._pool.shutdown(wait=False)  # gRPC leaves its worker threads idle, not ended
        if self.marker_socket:
            local_socket.remove(self.marker_socket, self._socket_inode)
        self.backend.close()

    def wait_for_termination(self, timeout_s: float | None = None) -> bool:
        return self._grpc.wait_for_termination(timeout_s)

    def __enter__(self) -> DaemonServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_bindable(listen: str) -> None:
    """ConfigError with the system's reason when no address of `listen` can be bound (gRPC's
    own error only says that binding failed, after logging a line of its own)."""
    host, port = parse_listen(listen)
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ConfigError(f"cannot listen on {listen}: {e.strerror or e}") from None
    reasons = []
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                s.bind(addr)
                return
            except OSError as e:
                reasons.append(e.strerror or str(e))
    raise ConfigError(f"cannot listen on {listen}: {'; '.join(dict.fromkeys(reasons))}")


def create_server(config: DaemonConfig, backend: Backend | None = None) -> tuple[DaemonServer, int]:
    """Build (not start) the daemon: bound to config.listen, port 0 picks a free port."""
    server = DaemonServer(config, backend)
    return server, server.port
