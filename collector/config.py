"""Frozen collector configuration, built by the CLI and by tests alike."""

from __future__ import annotations

import re
from dataclasses import dataclass

from collector.errors import ConfigError
from parawatt_proto.transport import AddressError, ClientTLS, parse_target

DEFAULT_DB_URL = "sqlite:///parawatt.db"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"

_UNITS_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


@dataclass(frozen=True)
class CollectorConfig:
    daemons: tuple[str, ...] = ()  # HOST:PORT of every node's power daemon
    db_url: str = DEFAULT_DB_URL
    metrics_listen: str | None = DEFAULT_METRICS_LISTEN  # None: no /metrics server
    # Raw readings older than this (relative to the newest reading) are deleted; the per-second
    # aggregates are kept for good.
    retention_s: float = 7 * 86400.0
    # The streaming join waits this long (in reading time past an interval's end) for a device's
    # late readings, then computes the interval with what it has and flags it "late".
    late_bound_s: float = 2.0
    # Readings further apart than this are a gap inside an interval (None: 5x the median
    # spacing of each device's own readings).
    max_gap_s: float | None = None
    # Long open intervals (runs, epochs) are integrated in pieces of this length so raw readings
    # need not stay in memory for hours.
    chunk_s: float = 5.0
    flush_interval_s: float = 0.2  # how often the writer commits what the join produced
    write_chunk_rows: int = 10_000  # readings per transaction (markers can go in between)
    max_backlog_readings: int = 1_000_000  # unwritten readings held while the DB is down
    subscribe_max_batch: int = 500  # readings per stream message asked of the daemon
    reconnect_backoff_s: tuple[float, float] = (0.2, 10.0)  # first and longest wait
    db_retry_backoff_s: tuple[float, float] = (0.5, 30.0)
    # At start-up a database that cannot be reached yet (a server still starting) is retried
    # this long before `serve` gives up with the error.
    db_start_timeout_s: float = 30.0
    idle_window_s: float = 30.0  # idle readings used to measure a device's idle power
    idle_guard_s: float = 2.0  # readings this close to a run's start/end are not idle
    idle_update_s: float = 10.0  # (unused: idle power changes as idle buckets close)
    idle_min_s: float = 30.0  # idle seconds seen before a device's idle power is trusted
    idle_bucket_s: float = 60.0  # idle seconds summarised and stored together
    idle_history_s: float = 6 * 3600.0  # idle history the idle power comes from
    run_label_grace_s: float = 300.0  # a run's Prometheus series live this long after it ends
    # ... and go this long after it last moved (a marker, a step) if it never ends (killed)
    run_silent_s: float = 3600.0
    rebuild_horizon_s: float = 86400.0  # on restart, open markers older than this are ignored
    retention_check_s: float = 60.0
    queue_batches: int = 2000  # stream messages buffered between ingest and join
    queue_items: int = 100_000  # ... and at most this many readings and markers in them
    # Unwritten readings past which the join waits for a slow (not failing) database; with the
    # queue this bounds memory under overload (a failing database: max_backlog_readings).
    max_unwritten_readings: int = 100_000
    daemons_file: str | None = None  # a Prometheus file_sd inventory (file or directory), watched
    inventory_poll_s: float = 1.0
    shard: tuple[int, int] = (1, 1)  # (K, N): this collector reads shard K of N of the daemons
    # Bounds against runaway or hostile senders (each overflow is counted on /metrics):
    max_run_series: int = 1000  # runs with per-run series on /metrics at once
    max_open_intervals: int = 200_000  # intervals the join holds open per node
    # Client TLS towards every daemon (one CA bundle may hold the CAs of several sites; each
    # daemon's certificate must name the host in its address). None: plaintext.
    tls: ClientTLS | None = None
    metrics_web_config: str | None = None  # exporter-toolkit web config: /metrics TLS, basic auth

    def __post_init__(self) -> None:
        for address in self.daemons:
            try:
                parse_target(address)
            except AddressError as exc:
                raise ConfigError(f"--daemon: {exc}") from None
        if self.metrics_listen is not None:
            parse_host_port(self.metrics_listen)
        for name in (
            "retention_s",
            "late_bound_s",
            "max_gap_s",
            "chunk_s",
            "flush_interval_s",
            "run_silent_s",
        ):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")


def parse_host_port(text: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); port 0 allowed (tests)."""
    m = re.fullmatch(r"\[?([^\[\]]*?)\]?:(\d{1,5})", text.strip())
    if not m or not m.group(1) or int(m.group(2)) > 65535:
        raise ConfigError(f"expected HOST:PORT, got {text!r}")
    return m.group(1), int(m.group(2))


def parse_duration_s(text: str) -> float:
    """'3600', '90s', '30m', '12h', '7d', '2w' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not m:
        raise ConfigError(f"expected a duration like 3600, 30m, 12h or 7d, got {text!r}")
    seconds = float(m.group(1)) * _UNITS_S[m.group(2)]
    if seconds <= 0:
        raise ConfigError(f"duration must be positive, got {text!r}")
    return seconds
