"""The Prometheus adapter: a custom collector that reads LiveState at scrape time."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from collector.config import parse_host_port
from collector.errors import ConfigError
from collector.metrics.state import LiveState
from parawatt_proto.device_metrics import DEVICE_GAUGES
from parawatt_proto.webconfig import MetricsHTTPServer as MetricsServer
from parawatt_proto.webconfig import WebConfigError, serve_registry

log = logging.getLogger(__name__)

_DEV = ["node", "device", "kind"]
# (metric, help, reading field, scale to base units)


class ParawattCollector:
    def __init__(self, state: LiveState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        yield from self._devices()
        yield from self._runs()
        yield from self._health()

    def _devices(self) -> Iterator[Metric]:
        s = self.state
        with s.lock:
            devices = list(s.devices.values())
            idle = dict(s.idle_w)
        latest = dict(s.latest)
        gauges = {
            name: GaugeMetricFamily(name, doc, labels=_DEV) for name, doc, _, _ in DEVICE_GAUGES
        }
        energy = CounterMetricFamily(
            "parawatt_device_energy_joules", "The device's total-energy counter.", labels=_DEV
        )
        idle_g = GaugeMetricFamily(
            "parawatt_device_idle_power_watts", "Measured idle power.", labels=_DEV
        )
        for d in devices:
            labels = [d.node, d.device, d.kind]
            r = latest.get(d.device)
            if r is not None:
                for name, _, attr, scale in DEVICE_GAUGES:
                    if (v := getattr(r, attr)) is not None:
                        gauges[name].add_metric(labels, v * scale)
                if r.energy_j is not None:
                    energy.add_metric(labels, r.energy_j)
            if d.device in idle:
                idle_g.add_metric(labels, idle[d.device])
        yield from gauges.values()
        yield energy
        yield idle_g

    def _runs(self) -> Iterator[Metric]:
        s = self.state
        labels = ["run_id", "sweep", "model", "nodes"]
        energy = CounterMetricFamily(
            "parawatt_run_energy_joules",
            "Energy of the run's completed rank sessions (all devices): equals SQL once the run "
            "is complete; never fed estimates.",
            labels=labels,
        )
        per_node = CounterMetricFamily(
            "parawatt_run_node_energy_joules",
            "The completed sessions' energy per node (label node as on device series).",
            labels=[*labels, "node"],
        )
        estimate = GaugeMetricFamily(
            "parawatt_run_energy_estimate_joules",
            "Energy of the run so far, open sessions included (a live estimate).",
            labels=labels,
        )
        epoch = GaugeMetricFamily("parawatt_run_epoch", "Latest epoch of the run.", labels=labels)
        step = GaugeMetricFamily(
            "parawatt_run_step", "Latest optimizer step of the run.", labels=labels
        )
        active = GaugeMetricFamily("parawatt_run_active", "1 while the run is open.", labels=labels)
        secs = HistogramMetricFamily(
            "parawatt_step_duration_seconds", "Duration of steps (per rank).", labels=labels
        )
        joules = HistogramMetricFamily(
            "parawatt_step_energy_joules", "Energy of steps (per rank).", labels=labels
        )
        with s.lock:
            for run in s.runs.values():
                lab = [run.run_id, run.sweep, run.model, str(run.nodes) if run.nodes else ""]
                energy.add_metric(lab, run.energy_final_j)
                for node, node_j in sorted(run.node_energy_j.items()):
                    per_node.add_metric([*lab, node], node_j)
                estimate.add_metric(lab, run.energy_estimate_j)
                epoch.add_metric(lab, run.epoch)
                step.add_metric(lab, run.step)
                active.add_metric(lab, 0 if run.ended_ns else 1)
                secs.add_metric(lab, run.step_seconds.cumulative(), run.step_seconds.sum)
                joules.add_metric(lab, run.step_joules.cumulative(), run.step_joules.sum)
        yield from (energy, per_node, estimate, epoch, step, active, secs, joules)

    def _health(self) -> Iterator[Metric]:
        s = self.state
        now_ns = time.time_ns()
        d = ["daemon", "node"]  # node: the daemon's hostname, as on device and daemon series
        up = GaugeMetricFamily(
            "parawatt_daemon_up", "1 while the daemon's stream is open.", labels=d
        )
        lag = GaugeMetricFamily(
            "parawatt_stream_lag_seconds", "Now minus the newest reading received.", labels=d
        )
        counters = {
            "readings": CounterMetricFamily(
                "parawatt_readings_ingested", "Readings received.", labels=d
            ),
            "markers": CounterMetricFamily(
                "parawatt_markers_ingested", "Markers received.", labels=d
            ),
            "missed": CounterMetricFamily(
                "parawatt_stream_missed_items",
                "Items the daemon could no longer deliver.",
                labels=d,
            ),
            "reconnects": CounterMetricFamily(
                "parawatt_daemon_reconnects", "Stream reconnect attempts.", labels=d
            ),
            "boots": CounterMetricFamily(
                "parawatt_daemon_boot_changes", "Daemon restarts seen.", labels=d
            ),
        }
        for h in list(s.daemons):
            lab = [h.address, h.hostname]
            up.add_metric(lab, 1 if h.up else 0)
            if h.last_reading_ns:
                lag.add_metric(lab, max(0.0, (now_ns - h.last_reading_ns) / 1e9))
            counters["readings"].add_metric(lab, h.readings_total)
            counters["markers"].add_metric(lab, h.markers_total)
            counters["missed"].add_metric(lab, h.missed_total)
            counters["reconnects"].add_metric(lab, h.reconnects_total)
            counters["boots"].add_metric(lab, h.boot_changes_total)
        yield up
        yield lag
        yield from counters.values()
        with s.lock:
            yield _counter(
                "parawatt_readings_dropped",
                "Readings dropped: write backlog full.",
                s.readings_dropped_total,
            )
            yield _counter(
                "parawatt_readings_written", "Readings stored.", s.readings_written_total
            )
            yield _counter(
                "parawatt_db_errors", "Failed database writes (retried).", s.db_errors_total
            )
            yield _counter(
                "parawatt_db_file_lost",
                "Times the SQLite file was deleted or replaced under the collector (the writes "
                "of the seconds before are lost; it writes at the path again: see the log).",
                s.db_file_lost_total,
            )
            yield _counter(
                "parawatt_unpaired_markers",
                "Markers whose partner never came.",
                s.unpaired_markers_total,
            )
            yield _counter(
                "parawatt_unmeasured_markers",
                "Markers of ranks on a device their node's daemon does not measure.",
                s.unmeasured_markers_total,
            )
            yield _counter(
                "parawatt_join_open_overflow",
                "Markers refused by the join: too many intervals were open on their node.",
                s.open_overflow_total,
            )
            yield _counter(
                "parawatt_join_readings_ahead",
                "Readings stored but not joined: stamped over 5 s ahead of their node's stream "
                "and the collector's clock.",
                s.readings_ahead_total,
            )
            yield _counter(
                "parawatt_join_readings_late",
                "Readings stored but not joined: behind newer ones of their device with an "
                "older counter (delivered late or sent again).",
                s.readings_late_total,
            )
            yield _counter(
                "parawatt_join_clock_steps",
                "Backward steps of a node's clock seen in its readings (intervals open across "
                "one are flagged clock_step).",
                s.clock_steps_total,
            )
            yield _counter(
                "parawatt_run_series_overflow",
                "Runs given no per-run series: the most that are shown were live (each run "
                "counted once, when first refused).",
                s.runs_overflow_total,
            )
            yield _counter(
                "parawatt_db_rows_refused",
                "Rows the database refused, dropped one by one (see the log).",
                s.rows_refused_total,
            )
            yield _counter(
                "parawatt_markers_refused",
                "Markers refused for run ownership (another owner's run, or a finished run).",
                s.markers_refused_total,
            )
            backlog = GaugeMetricFamily(
                "parawatt_db_backlog_readings", "Readings waiting to be written."
            )
            backlog.add_metric([], s.db_backlog_readings)
            yield backlog
            hist = HistogramMetricFamily(
                "parawatt_db_write_duration_seconds", "Time per database commit."
            )
            hist.add_metric([], s.db_write_seconds.cumulative(), s.db_write_seconds.sum)
            yield hist
            intervals = CounterMetricFamily(
                "parawatt_intervals", "Intervals computed.", labels=["kind"]
            )
            for kind, n in sorted(s.intervals_total.items()):
                intervals.add_metric([kind], n)
            yield intervals


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc)
    c.add_metric([], value)
    return c


def create_metrics_server(
    state: LiveState | None, listen: str, collector=None, web_config: str | None = None
) -> tuple[MetricsServer, int]:
    """Serve /metrics on HOST:PORT (port 0: a free one) from a registry of its own: the
    state's series, or another collector's (the merged series of --workers); with TLS and basic
    auth when an exporter-toolkit web-config file is given."""
    host, port = parse_host_port(listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector or ParawattCollector(state))
    try:
        server = serve_registry(registry, host, port, listen, web_config,
                                "every node's power and every run's energy", log)  # fmt: skip
    except WebConfigError as exc:
        raise ConfigError(str(exc)) from None
    return server, server.port
