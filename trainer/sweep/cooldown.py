"""Thermal fairness between sweep points: wait until every GPU is back near its idle temperature.

A GPU still hot from the previous point draws more power for the same work, which would bias the
point that runs next. The wait logic is pure (clock and sleep are injected); `DaemonThermometer`
is the gRPC adapter that reads the node daemon's latest readings (the trainer package talks to the
daemon only through the generated stubs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from parawatt_proto.transport import (
    AddressError,
    ClientTLS,
    TLSConfigError,
    describe_rpc_error,
    open_channel,
)
from trainer.sweep.grid import SweepError


class Thermometer(Protocol):
    def gpu_temperatures(self) -> dict[str, float]:
        """Latest temperature per GPU uuid (GPUs that do not report one are left out)."""
        ...


@dataclass(frozen=True)
class CooldownResult:
    waited_s: float
    reached: bool  # False: the time cap ended the wait
    temperatures_c: dict[str, float]
    idle_c: dict[str, float]

    def describe(self) -> str:
        hot = {u: t for u, t in self.temperatures_c.items() if u in self.idle_c}
        detail = ", ".join(
            f"{u} {t:.1f} C (idle {self.idle_c[u]:.1f})" for u, t in sorted(hot.items())
        )
        verdict = "cooled down" if self.reached else "time cap reached, still warm"
        return (
            f"cool-down: waited {self.waited_s:.1f} s, {verdict}: {detail or 'no GPU temperatures'}"
        )


def hot_devices(temps: dict[str, float], idle: dict[str, float], delta_c: float) -> list[str]:
    return sorted(u for u, t in temps.items() if u in idle and t > idle[u] + delta_c)


def wait_for_cooldown(
    read: Callable[[], dict[str, float]],
    idle_c: dict[str, float],
    *,
    delta_c: float,
    max_wait_s: float,
    poll_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> CooldownResult:
    start = clock()
    while True:
        temps = read()
        waited = clock() - start
        if not hot_devices(temps, idle_c, delta_c):
            return CooldownResult(waited, True, temps, idle_c)
        if waited >= max_wait_s:
            return CooldownResult(waited, False, temps, idle_c)
        sleep(min(poll_s, max(0.0, max_wait_s - waited)))


class DaemonThermometer:
    """GPU temperatures from a power daemon's GetLatest RPC. TLS: `tls`, else the
    PARAWATT_TLS_* environment (as every parawatt client); `unix:PATH` addresses work too."""

    def __init__(self, address: str, timeout_s: float = 5.0, tls: ClientTLS | None = None):
        from parawatt_proto import convert
        from parawatt_proto import parawatt_pb2 as pb
        from parawatt_proto import parawatt_pb2_grpc as pb_grpc

        self._pb, self._convert = pb, convert
        self._address = address
        self._timeout_s = timeout_s
        self._tls = tls if tls is not None else ClientTLS.from_env()
        try:
            self._channel = open_channel(address, self._tls)
        except (AddressError, TLSConfigError) as exc:
            raise SweepError(f"cool-down: {exc}") from None
        self._stub = pb_grpc.PowerDaemonStub(self._channel)

    def gpu_temperatures(self) -> dict[str, float]:
        return self._gpu_field("temperature_c", "temperatures")

    def gpu_energy_j(self) -> dict[str, float]:
        """Each GPU's energy counter (J): the sweep's one-line result per run uses the change."""
        return self._gpu_field("energy_j", "energy counters")

    def _gpu_field(self, name: str, what: str) -> dict[str, float]:
        pb = self._pb
        try:
            latest = self._stub.GetLatest(pb.GetLatestRequest(), timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise SweepError(
                f"cannot read {what} from the power daemon: "
                + describe_rpc_error(self._address, exc, self._tls)
            ) from None
        node = self._convert.node_rec(latest.info)
        gpus = {d.index: d.uuid for d in node.devices if d.kind == "gpu"}
        return {
            r.device_uuid: value
            for r in self._convert.readings(latest, gpus)
            if (value := getattr(r, name)) is not None
        }

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> DaemonThermometer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
