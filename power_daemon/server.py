"""create_server(config, backend) -> (server, port): the daemon, built apart from serving."""

from __future__ import annotations

import logging
import socket
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from power_daemon import codec
from power_daemon.backends.base import Backend
from power_daemon.backends.factory import build_backend, node_hostname
from power_daemon.config import DaemonConfig, parse_listen
from power_daemon.daemon import Daemon
from power_daemon.errors import ConfigError
from power_daemon.service import SERVICE_NAME, PowerDaemonService, method_handlers

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
        try:
            self.port = self._grpc.add_insecure_port(config.listen)
        except RuntimeError as e:
            self.backend.close()
            raise ConfigError(f"cannot listen on {config.listen}: {e}") from None
        self.address = f"{host}:{self.port}"
        self._closed = False

    @property
    def boot_id(self) -> str:
        return self.core.boot_id

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
