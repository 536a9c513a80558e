"""power-daemon command line: `serve` and `probe` (thin: options -> DaemonConfig -> server)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click

from parawatt_proto.cli_args import FINITE, FiniteFloat, Utf8Group
from parawatt_proto.limits import DEFAULT_MAX_CLOCK_SKEW_S
from power_daemon import __version__
from power_daemon.config import (
    BACKENDS,
    DEFAULT_INTERVAL_MS,
    MARKERS_FROM,
    MAX_COUNTER_MS,
    MIN_COUNTER_MS,
    DaemonConfig,
    SimParams,
)
from power_daemon.errors import ConfigError, DaemonError

log = logging.getLogger("power_daemon")


def _config(**kwargs) -> DaemonConfig:
    rapl = kwargs.pop("rapl")
    if "interval_ms" in kwargs and kwargs["interval_ms"] is None:  # not chosen: tuned at start
        kwargs["interval_ms"], kwargs["tune_interval"] = DEFAULT_INTERVAL_MS, True
    if "marker_socket" in kwargs and not kwargs["marker_socket"]:
        kwargs["marker_socket"] = None  # --marker-socket '' disables it
    kwargs["rapl"] = "auto" if rapl is None else ("on" if rapl else "off")
    sim = {
        "coverage_fraction": kwargs.pop("sim_coverage"),
        "background_w": kwargs.pop("sim_background_w"),
    }
    if (counter_ms := kwargs.pop("sim_counter_ms")) is not None:
        sim["counter_period_s"] = counter_ms / 1000.0
    kwargs["sim"] = SimParams(**sim)
    return DaemonConfig(**kwargs)


def _fail(e: DaemonError) -> None:
    click.echo(f"power-daemon: error: {e}", err=True)
    sys.exit(2 if isinstance(e, ConfigError) else 1)


def _backend_options(fn):
    options = [
        click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True),
        click.option("--sim-devices", type=int, default=2, show_default=True),
        click.option(
            "--rapl/--no-rapl", default=None, help="CPU/DRAM energy (default: where readable)"
        ),
        click.option("--rapl-root", default="/sys/class/powercap", show_default=True),
        click.option("--hostname", default="", help="node name to report (default: this host's)"),
        click.option("--seed", type=int, default=0, show_default=True, help="sim noise and UUIDs"),
        click.option("--sim-coverage", type=FINITE, default=1.0, show_default=True,
                     help="sim: share of each counter window the sensor sees (A100/H100: 0.25)"),
        click.option("--sim-counter-ms", type=FiniteFloat(MIN_COUNTER_MS, MAX_COUNTER_MS),
                     default=None, help="sim: energy counter update period [default: 100]"),
        click.option("--sim-background-w", type=FINITE, default=0.0, show_default=True,
                     help="sim: another job's load between runs (the GPU never idles)"),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


class _Group(Utf8Group):
    prog = "power-daemon"


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="power-daemon")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
def main(log_level: str) -> None:
    """parawatt per-node power daemon."""
    if log_level.lower() != "debug":
        # gRPC core logs every failed TLS handshake (a port scan, a plaintext client) at INFO on
        # stderr: noise an unauthenticated peer could flood the log with. Our own lines say it.
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    logging.basicConfig(
        level=log_level.upper(), format="power-daemon: %(levelname)s %(message)s", stream=sys.stderr
    )


@main.command()
@click.option(
    "--listen", default="127.0.0.1:50051", show_default=True, help="HOST:PORT; port 0 = free"
)
@_backend_options
@click.option(
    "--interval-ms",
    type=FINITE,
    default=None,
    show_default=f"{DEFAULT_INTERVAL_MS:g}, tuned to the measured counter",
    help="time between readings; not a divisor of the GPU energy counter's ~100 ms period, so "
    "readings fall at every phase of its updates and the collector pins each update moment to "
    "~1 ms (every 20 ms: +-10 ms). Not given: where calibration measures a counter period "
    f"{DEFAULT_INTERVAL_MS:g} ms does not spread, the daemon picks an interval "
    "near it; `power-daemon doctor` checks",
)
@click.option("--buffer-capacity", type=int, default=300_000, show_default=True)
@click.option(
    "--stream-linger-ms",
    type=FINITE,
    default=100.0,
    show_default=True,
    help="how long a live stream waits to fill a batch",
)
@click.option(
    "--max-streams", type=int, default=32, show_default=True, help="concurrent Subscribe streams"
)
@click.option(
    "--max-clock-skew",
    "max_clock_skew_s",
    type=FINITE,
    default=DEFAULT_MAX_CLOCK_SKEW_S,
    show_default=True,
    help="seconds a marker's time may be from this host's clock",
)
@click.option(
    "--require-run-token",
    is_flag=True,
    help="refuse markers without a run token (clients older than run ownership)",
)
@click.option(
    "--markers-from",
    type=click.Choice(MARKERS_FROM),
    default="local",
    show_default=True,
    help="who may send markers: local (the Unix socket and loopback TCP), socket (the Unix "
    "socket only) or any (every peer that reaches the gRPC port)",
)
@click.option("--port-file", type=click.Path(dir_okay=False), help="write the bound port here")
@click.option(
    "--calibrate-s",
    type=FINITE,
    default=1.5,
    show_default=True,
    help="measure each GPU's sensor this long at start (0: trust the backend's figures)",
)
@click.option(
    "--sampler-nice",
    type=click.IntRange(-20, 19),
    default=-10,
    show_default=True,
    help="sampler thread priority (< 0 needs CAP_SYS_NICE; else left as it is)",
)
@click.option(
    "--sampler-realtime/--no-sampler-realtime",
    default=True,
    show_default=True,
    help="sampler thread under SCHED_FIFO priority 1 (needs an RLIMIT_RTPRIO of 1, e.g. systemd "
    "LimitRTPRIO=1, or CAP_SYS_NICE; else --sampler-nice)",
)
@click.option(
    "--gil-switch-ms",
    type=FiniteFloat(0.1, 100),
    default=1.0,
    show_default=True,
    help="interpreter GIL switch interval: lower hands the sampler the GIL sooner",
)
@click.option(
    "--metrics-listen",
    default="off",
    show_default=True,
    help="Prometheus /metrics on PORT (loopback), HOST:PORT or [v6]:PORT; 'off' to disable",
)
@click.option(
    "--metrics-web-config",
    type=click.Path(dir_okay=False),
    help="Prometheus exporter-toolkit web config for /metrics (TLS, basic auth)",
)
@click.option(
    "--tls-cert", type=click.Path(dir_okay=False), help="gRPC over TLS: certificate (PEM)"
)
@click.option("--tls-key", type=click.Path(dir_okay=False), help="gRPC over TLS: private key (PEM)")
@click.option(
    "--tls-client-ca",
    type=click.Path(dir_okay=False),
    help="mutual TLS: serve only clients with a certificate signed by this CA (PEM)",
)
@click.option(
    "--marker-socket",
    default="auto",
    show_default=True,
    help="Unix socket for local markers; 'auto': $XDG_RUNTIME_DIR/parawatt/marker.sock, else "
    "/run/parawatt/marker.sock if that directory is writable; '' to disable",
)
@click.option(
    "--marker-socket-group", default=None, help="group allowed to send markers (socket mode 0660)"
)
def serve(
    port_file: str | None,
    gil_switch_ms: float,
    metrics_listen: str,
    metrics_web_config: str | None,
    **options,
) -> None:
    """Sample every device and serve readings and markers over gRPC until SIGTERM/SIGINT.
    SIGHUP re-reads the TLS files (they are also re-read when they change)."""
    from power_daemon.serve.server import create_server

    sys.setswitchinterval(gil_switch_ms / 1000.0)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # already while NVML starts, which takes a while
        signal.signal(sig, lambda *_: stop.set())
    reload = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    try:
        if metrics_listen != "off":  # a typo fails before NVML is started for nothing
            from power_daemon.serve.metrics import metrics_address

            metrics_address(metrics_listen)
        if metrics_web_config:
            _check_web_config(metrics_web_config, metrics_listen)
        server, port = create_server(_config(**options))
    except (DaemonError, ValueError) as e:
        _fail(e if isinstance(e, DaemonError) else ConfigError(str(e)))
    with server, contextlib.ExitStack() as extras:
        server.start()  # takes the first readings, so /metrics is never empty
        extras.enter_context(_metrics(server, metrics_listen, metrics_web_config))
        if port_file:  # before the line below, so whoever waits for the line finds the file
            _write_port_file(port_file, port)
            # Gone on exit, so nobody reads a stale port (a later daemon may get another one).
            extras.callback(_remove_port_file, port_file, port)
        core = server.core
        tls = "mTLS" if options["tls_client_ca"] else "TLS" if server.tls else "plaintext"
        local = f", markers also on unix:{server.marker_socket}" if server.marker_socket else ""
        click.echo(
            f"power-daemon listening on {server.address} (backend={server.backend.name}, "
            f"devices={len(core.devices)}, boot_id={core.boot_id}, {tls}{local})"
        )
        sys.stdout.flush()
        while not stop.wait(0.5):
            if reload.is_set():
                reload.clear()
                log.info("SIGHUP: TLS files are read again at the next handshake")
                server.reload_tls()
        log.info("stopping")
    log.info("stopped")


def _remove_port_file(port_file: str, port: int) -> None:
    """Remove the file only while it still holds our port: another daemon may have taken it."""
    path = Path(port_file)
    with contextlib.suppress(OSError):
        if path.read_text().strip() == str(port):
            path.unlink()


@contextlib.contextmanager
def _metrics(server, listen: str, web_config: str | None):
    """The daemon's own /metrics while it serves (nothing with 'off')."""
    if listen == "off":
        yield
        return
    from power_daemon.serve.metrics import start_metrics_server

    try:
        metrics = start_metrics_server(server.core, listen, server.service.streams, web_config)
    except DaemonError as e:
        server.close()
        _fail(e)
    click.echo(
        f"power-daemon: metrics on port {metrics.port} ({metrics.scheme} /metrics)", err=True
    )
    try:
        yield
    finally:
        metrics.close()


def _check_web_config(path: str, listen: str) -> None:
    """Before the backend starts: a web config that cannot be used fails in one line."""
    from parawatt_proto.webconfig import WebConfigError, load_web_config

    if listen == "off":
        raise ConfigError("--metrics-web-config needs --metrics-listen")
    try:
        web = load_web_config(path)
        if web.tls:
            web.ssl_context()
    except WebConfigError as e:
        raise ConfigError(str(e)) from None


def _write_port_file(port_file: str, port: int) -> None:
    tmp = Path(f"{port_file}.tmp{os.getpid()}")
    try:
        tmp.write_text(f"{port}\n")
        tmp.replace(port_file)  # readers never see a half-written file
    except OSError as e:
        _fail(ConfigError(f"cannot write --port-file {port_file}: {e.strerror or e}"))


def _client_tls_options(fn):
    """The client TLS options every parawatt client takes (also from PARAWATT_TLS_*)."""
    options = [
        click.option("--tls-ca", envvar="PARAWATT_TLS_CA", type=click.Path(dir_okay=False),
                     help="TLS: CA bundle that signs the daemon's certificate"),
        click.option("--tls-cert", envvar="PARAWATT_TLS_CERT", type=click.Path(dir_okay=False),
                     help="mutual TLS: this client's certificate"),
        click.option("--tls-key", envvar="PARAWATT_TLS_KEY", type=click.Path(dir_okay=False),
                     help="mutual TLS: this client's key"),
        click.option("--tls-server-name", envvar="PARAWATT_TLS_SERVER_NAME", default="",
                     help="name expected in the daemon's certificate (default: its host)"),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def _client_tls(options: dict):
    from parawatt_proto.transport import ClientTLS, TLSConfigError

    path = lambda name: Path(v) if (v := options.pop(name)) else None  # noqa: E731
    try:
        tls = ClientTLS(
            ca=path("tls_ca"),
            cert=path("tls_cert"),
            key=path("tls_key"),
            server_name=options.pop("tls_server_name"),
        )
    except TLSConfigError as e:
        _fail(ConfigError(str(e)))
    return tls if tls.enabled else None


@main.command()
@click.option("--daemon", "address", help="query a running daemon at HOST:PORT or unix:PATH")
@_backend_options
@click.option(
    "--count", type=click.IntRange(min=1), default=3, show_default=True, help="readings per device"
)
@click.option("--interval-ms", type=FINITE, default=200.0, show_default=True)
@click.option("--timeout-s", type=FINITE, default=5.0, show_default=True)
@_client_tls_options
def probe(address: str | None, count: int, timeout_s: float, **options) -> None:
    """List devices and print a few readings (local backend, or a daemon with --daemon)."""
    from parawatt_proto.transport import AddressError, TLSConfigError, parse_target
    from power_daemon.tools.probe import probe_daemon, probe_local

    tls = _client_tls(options)

    # Written as `not a <= x` so that nan fails too (click's ranges let nan through).
    if not 0.1 <= options["interval_ms"] <= 60_000:
        raise click.BadParameter("must be between 0.1 and 60000", param_hint="--interval-ms")
    if not 0 < timeout_s <= 3600:
        raise click.BadParameter("must be > 0 and <= 3600", param_hint="--timeout-s")
    interval_s = options["interval_ms"] / 1000.0
    try:
        if address:
            lines = probe_daemon(parse_target(address).address, count, interval_s, timeout_s, tls)
        else:
            lines = probe_local(_config(**options), count, interval_s)
        for line in lines:
            click.echo(line)
    except (AddressError, TLSConfigError) as e:
        _fail(ConfigError(str(e)))
    except DaemonError as e:
        _fail(e)


@main.command()
@_backend_options
@click.option(
    "--interval-ms",
    type=FINITE,
    default=None,
    show_default=f"{DEFAULT_INTERVAL_MS:g}, tuned to the measured counter",
    help="sampling period (as serve's) whose jitter is measured and whose phase against each "
    "GPU's counter updates is checked: not a divisor of the counter period, so readings fall "
    "at every phase of its updates",
)
@click.option(
    "--calibrate-s",
    type=FINITE,
    default=1.5,
    show_default=True,
    help="how long each GPU's sensor is polled",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)  # fmt: skip
def doctor(calibrate_s: float, fmt: str, **options) -> None:
    """Check this node: NVML, driver, each GPU's sensor, sampling phase and jitter, RAPL, clock
    source.

    Exit status 1 when an item is missing."""
    from power_daemon.tools.doctor import MISSING, overall, render, run_checks

    if not 0.2 <= calibrate_s <= 60:
        raise click.BadParameter("must be between 0.2 and 60", param_hint="--calibrate-s")
    try:
        checks = run_checks(_config(**options), calibrate_s=calibrate_s)
    except (DaemonError, ValueError) as e:
        _fail(e if isinstance(e, DaemonError) else ConfigError(str(e)))
    click.echo(render(checks, fmt))
    sys.exit(1 if overall(checks) == MISSING else 0)
