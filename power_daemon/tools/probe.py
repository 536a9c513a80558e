"""`power-daemon probe`: a tiny nvidia-smi over any backend or a running daemon."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime

import grpc
import tabulate

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto import parawatt_pb2_grpc as pb_grpc
from parawatt_proto.convert import device_pb, device_rec, readings
from parawatt_proto.records import DeviceRec, ReadingRec
from parawatt_proto.transport import ClientTLS, describe_rpc_error, open_channel
from power_daemon.backends.factory import build_backend
from power_daemon.config import DaemonConfig
from power_daemon.errors import BackendUnavailable
from power_daemon.model import Sample


def _num(v: float | None, fmt: str) -> str:
    """format(v, fmt), or '-' padded to the same width when the device does not report v."""
    width = int(fmt.split(".")[0] or 0)
    return f"{'-':>{width}}" if v is None else format(v, fmt)


def device_table(devices: list[DeviceRec]) -> list[str]:
    """The devices as a table (tabulate, like every terminal table of parawatt); the readings
    below it are a stream of fixed-width lines, printed as they arrive."""
    rows = [
        [d.index, d.kind, d.name, d.uuid, _num(d.power_limit_w, ".0f")]
        + ["yes" if d.has_energy_counter else "no"]
        for d in devices
    ]
    head = ["#", "kind", "name", "uuid", "limit_W", "counter"]
    align = ["right", "left", "left", "left", "right", "left"]
    saved, tabulate.MIN_PADDING = tabulate.MIN_PADDING, 0  # the collector's look: no header pad
    try:
        text = tabulate.tabulate(
            rows, headers=head, tablefmt="simple", disable_numparse=True, colalign=align
        )
    finally:
        tabulate.MIN_PADDING = saved
    return text.splitlines()


READING_HEADER = (
    f"{'time':<12} {'#':>2} {'power_W':>8} {'avg_W':>8} {'energy_J':>14} "
    f"{'gpu%':>5} {'mem%':>5} {'temp_C':>6} {'sm_MHz':>6} {'mem_MHz':>7}"
)


def reading_line(s: Sample | ReadingRec, device: int) -> str:
    clock = datetime.fromtimestamp(s.time_ns / 1e9).strftime("%H:%M:%S.%f")[:12]
    if s.lost:
        return f"{clock:<12} {device:>2} LOST"
    return (
        f"{clock:<12} {device:>2} {_num(s.power_w, '8.1f')} {_num(s.power_avg_w, '8.1f')} "
        f"{_num(s.energy_j, '14.3f')} {_num(s.gpu_util_pct, '5.0f')} {_num(s.mem_util_pct, '5.0f')} "
        f"{_num(s.temperature_c, '6.1f')} {_num(s.sm_clock_mhz, '6.0f')} "
        f"{_num(s.mem_clock_mhz, '7.0f')}"
    )


def probe_local(config: DaemonConfig, count: int, interval_s: float) -> Iterator[str]:
    backend = build_backend(config)
    try:
        yield f"backend {backend.name}  driver {backend.driver_version or '-'}"
        # through the contract, so that both probes show what a subscriber sees
        yield from device_table(
            [device_rec(device_pb(i, d)) for i, d in enumerate(backend.devices())]
        )
        yield READING_HEADER
        for i in range(count):
            if i:
                time.sleep(interval_s)
            for s in backend.read(time.time_ns()):
                yield reading_line(s, s.device)
    finally:
        backend.close()


def probe_daemon(
    address: str, count: int, interval_s: float, timeout_s: float, tls: ClientTLS | None = None
) -> Iterator[str]:
    with open_channel(address, tls) as channel:
        stub = pb_grpc.PowerDaemonStub(channel)
        call = _translated(address, tls)
        info = call(lambda: stub.GetInfo(pb.GetInfoRequest(), timeout=timeout_s))
        yield (
            f"node {info.hostname}  backend {info.backend}  driver {info.driver_version or '-'}  "
            f"boot {info.boot_id}  seq [{info.first_seq}, {info.next_seq})"
        )
        devices = [device_rec(d) for d in info.devices]
        uuids = {d.index: d.uuid for d in devices}
        index = {d.uuid: d.index for d in devices}
        yield from device_table(devices)
        yield READING_HEADER
        for i in range(count):
            if i:
                time.sleep(interval_s)
            latest = call(lambda: stub.GetLatest(pb.GetLatestRequest(), timeout=timeout_s))
            for r in readings(latest, uuids):
                yield reading_line(r, index[r.device_uuid])


def _translated(address: str, tls: ClientTLS | None) -> Callable:
    def call(fn: Callable):
        try:
            return fn()
        except grpc.RpcError as e:
            raise BackendUnavailable(describe_rpc_error(address, e, tls)) from None

    return call
