"""The daemon's own /metrics: device-level series straight from the node (Prometheus adapter).

A custom collector reads the daemon core at scrape time, so a scrape costs nothing between
scrapes and never sees a half-updated value. Labels follow dcgm-exporter's (`gpu` = the vendor
index, `UUID`, `modelName`, `Hostname`, `pci_bus_id`) in the snake_case Prometheus asks for
(`promtool check metrics` refuses camelCase): `gpu`, `uuid`, `model_name`, `hostname`,
`pci_bus_id`; plus `node` (the same hostname), the one label every parawatt series that belongs
to a node carries (collector series too, so they join), and `kind` (gpu | cpu | dram). All of them are bounded
by the node's hardware; there is no run, epoch or step label here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from parawatt_proto.device_metrics import DEVICE_GAUGES
from parawatt_proto.webconfig import MetricsHTTPServer as MetricsServer
from parawatt_proto.webconfig import WebConfigError, serve_registry
from power_daemon import __version__
from power_daemon.config import parse_listen
from power_daemon.daemon import Daemon
from power_daemon.errors import ConfigError
from power_daemon.model import DeviceKind

log = logging.getLogger(__name__)

DEVICE_LABELS = ["node", "hostname", "gpu", "uuid", "model_name", "pci_bus_id", "kind"]
_KIND = {DeviceKind.GPU: "gpu", DeviceKind.CPU_PACKAGE: "cpu", DeviceKind.DRAM: "dram"}


class DaemonMetrics:
    """prometheus_client custom collector over a running Daemon core."""

    def __init__(self, core: Daemon, stream_slots=None) -> None:
        self.core = core
        self._slots = stream_slots  # service.StreamSlots: open Subscribe streams

    def collect(self) -> Iterator[Metric]:
        yield from self._devices()
        yield from self._health()

    def _labels(self) -> dict[int, list[str]]:
        host = self.core.hostname
        return {
            i: [host, host, str(d.vendor_index), d.uuid, d.name, d.pci_bus_id, _KIND[d.kind]]
            for i, d in enumerate(self.core.devices)
        }

    def _devices(self) -> Iterator[Metric]:
        labels = self._labels()
        gauges = {
            n: GaugeMetricFamily(n, doc, labels=DEVICE_LABELS) for n, doc, _, _ in DEVICE_GAUGES
        }
        energy = CounterMetricFamily(
            "parawatt_device_energy_joules",
            "The device's total-energy counter (since driver load or daemon start).",
            labels=DEVICE_LABELS,
        )
        age = GaugeMetricFamily(
            "parawatt_device_reading_age_seconds",
            "Now minus the time of the device's newest reading.",
            labels=DEVICE_LABELS,
        )
        limit = GaugeMetricFamily(
            "parawatt_device_power_limit_watts", "Enforced power limit.", labels=DEVICE_LABELS
        )
        total = GaugeMetricFamily(
            "parawatt_device_memory_total_bytes", "Device memory size.", labels=DEVICE_LABELS
        )
        for i, d in enumerate(self.core.devices):
            if d.power_limit_w is not None:
                limit.add_metric(labels[i], d.power_limit_w)
            if d.memory_total_bytes is not None:
                total.add_metric(labels[i], d.memory_total_bytes)
        now_ns = time.time_ns()
        for latest in self.core.latest():
            s = latest.sample
            lab = labels.get(s.device)
            if lab is None:
                continue
            age.add_metric(lab, max(0.0, (now_ns - s.time_ns) / 1e9))
            if s.lost:
                continue
            for name, _, attr, scale in DEVICE_GAUGES:
                if (v := getattr(s, attr)) is not None:
                    gauges[name].add_metric(lab, v * scale)
            if s.energy_j is not None:
                energy.add_metric(lab, s.energy_j)
        yield from gauges.values()
        yield from (energy, age, limit, total)

    def _health(self) -> Iterator[Metric]:
        core = self.core
        node = [core.hostname]
        info = GaugeMetricFamily(
            "parawatt_daemon_info",
            "Always 1; the daemon's identity.",
            labels=["node", "boot_id", "backend", "driver_version", "version"],
        )
        info.add_metric(
            [core.hostname, core.boot_id, core.backend.name, core.backend.driver_version,
             __version__],
            1,
        )  # fmt: skip
        yield info
        yield _gauge(
            "parawatt_daemon_start_time_seconds", "Daemon start.", core.started_ns / 1e9, node
        )
        yield _gauge(
            "parawatt_daemon_sampling_interval_seconds",
            "Configured time between readings.",
            core.config.interval_ms / 1000.0,
            node,
        )
        times = [r.sample.time_ns for r in core.latest()]
        if times:
            yield _gauge(
                "parawatt_daemon_sampling_lag_seconds",
                "Now minus the newest reading of any device (grows when sampling stalls).",
                max(0.0, (time.time_ns() - max(times)) / 1e9),
                node,
            )
        sampler = core.sampler
        yield _counter(
            "parawatt_daemon_skipped_ticks",
            "Sampling deadlines missed because a tick overran.",
            sampler.skipped_ticks,
            node,
        )
        yield _counter(
            "parawatt_daemon_failed_ticks",
            "Sampling ticks that raised.",
            sampler.failed_ticks,
            node,
        )
        first, nxt = core.buffer.bounds()
        yield _counter(
            "parawatt_daemon_buffered_items",
            "Readings and markers stored since start.",
            nxt - 1,
            node,
        )
        yield _gauge(
            "parawatt_daemon_buffer_items", "Items held in the ring buffer now.", nxt - first, node
        )
        yield _gauge(
            "parawatt_daemon_buffer_capacity_items", "Ring buffer size.", core.buffer.capacity, node
        )
        yield _counter(
            "parawatt_daemon_invalid_requests",
            "Requests refused as undecodable or implausible (INVALID_ARGUMENT).",
            core.invalid_requests_total,
            node,
        )
        yield _counter(
            "parawatt_daemon_markers_refused",
            "Markers refused for run ownership (another owner's run, or a finished run).",
            core.owners.rejected_total,
            node,
        )
        yield _counter(
            "parawatt_daemon_runs_forgotten",
            "Runs whose owner was forgotten: the run table was full.",
            core.owners.evicted_total,
            node,
        )
        yield _counter(
            "parawatt_daemon_markers_unjudged",
            "Markers passed on without an ownership check: their run may be one the daemon "
            "forgot and could not record (the collector checks them).",
            core.owners.unjudged_total,
            node,
        )
        if self._slots is not None:
            yield _gauge(
                "parawatt_daemon_streams", "Open Subscribe streams.", self._slots.open, node
            )


def _gauge(name: str, doc: str, value: float, node: list[str]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=["node"])
    g.add_metric(node, value)
    return g


def _counter(name: str, doc: str, value: float, node: list[str]) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc, labels=["node"])
    c.add_metric(node, value)
    return c


def metrics_address(listen: str) -> tuple[str, int]:
    """HOST:PORT, [v6]:PORT, or a bare PORT (then loopback: node metrics stay on the node
    unless an address says otherwise)."""
    text = listen.strip()
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    try:
        return parse_listen(text)
    except ConfigError:
        raise ConfigError(
            f"--metrics-listen must be PORT, HOST:PORT or [v6]:PORT, not {listen!r}"
        ) from None


def start_metrics_server(
    core: Daemon, listen: str, stream_slots=None, web_config: str | None = None
) -> MetricsServer:
    """Serve /metrics for `core` on `listen` (port 0: a free one) from a registry of its own,
    with TLS and basic auth when an exporter-toolkit web-config file is given."""
    host, port = metrics_address(listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonMetrics(core, stream_slots))
    try:
        return serve_registry(registry, host, port, listen, web_config,
                              "this node's power readings", log)  # fmt: skip
    except WebConfigError as exc:
        raise ConfigError(str(exc)) from None
