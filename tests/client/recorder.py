"""A marker intake that records what a client sends, exactly as received (the real daemon keeps
the run token to itself), on a real gRPC server: TCP on 127.0.0.1 or a Unix socket."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto import parawatt_pb2_grpc as pb_grpc


class Recorder(pb_grpc.PowerDaemonServicer):
    def __init__(self, listen: str = "127.0.0.1:0"):
        self.markers: list[pb.Marker] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_PowerDaemonServicer_to_server(self, self.server)
        port = self.server.add_insecure_port(listen)
        self.address = listen if listen.startswith("unix:") else f"127.0.0.1:{port}"
        self.server.start()

    def SendMarkers(self, request, context):  # noqa: N802 (gRPC's name)
        with self._lock:
            self.markers.extend(request.markers)
        return pb.MarkerAck(accepted=len(request.markers))

    def close(self) -> None:
        self.server.stop(0)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
