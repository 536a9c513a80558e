"""`collector`: serve (ingest, join, store, /metrics), runs, show, steps, migrate.

Thin: every command builds the same objects the tests use (create_collector, queries) and turns
the project's exceptions into one clear message and exit status 1, never a traceback.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click

from collector.config import (
    DEFAULT_DB_URL,
    DEFAULT_METRICS_LISTEN,
    CollectorConfig,
    parse_duration_s,
)
from collector.errors import CollectorError, ConfigError
from collector.ingest.discovery import parse_shard
from collector.report import text as tables
from collector.report.build import report as report_command
from collector.store import queries
from collector.store.db import create_db_engine, describe, migrate, open_existing, schema_revision
from parawatt_proto.cli_args import Utf8Group
from parawatt_proto.transport import ClientTLS, TLSConfigError

DB_OPTION = click.option(
    "--db", "db_url", default=DEFAULT_DB_URL, show_default=True,
    help="Database URL: sqlite:///FILE or postgresql+psycopg://USER@HOST:PORT/DB.",
)  # fmt: skip
FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(tables.FORMATS), default="table", show_default=True
)


# A marker's rank is an int32 on the wire: a larger one matches nothing, and one past int64
# raised OverflowError from the database driver (a traceback, not a usage error).
RANK_MAX = 2**31 - 1

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Group(Utf8Group):
    """Turns CollectorError from any command into `error: ...` and exit status 1."""

    prog = "collector"

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CollectorError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=_Group)
def main() -> None:
    """parawatt collector: joins every power daemon's readings and markers into per-step,
    per-epoch and per-run energy in SQL, and serves it as Prometheus metrics."""
    # gRPC core would log each failed TLS handshake at INFO; the subscriber logs one line itself.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


@main.command()
@click.option("--daemon", "daemons", multiple=True, metavar="HOST:PORT[,HOST:PORT...]",
              envvar="PARAWATT_DAEMONS",
              help="Power daemon(s) to subscribe to: repeat, or a comma-separated list "
                   "(also from $PARAWATT_DAEMONS).")  # fmt: skip
@click.option(
    "--daemons-file",
    type=click.Path(path_type=Path),
    metavar="FILE|DIR",
    help="Inventory of daemons in Prometheus file_sd form (JSON/YAML target groups), "
    "or a directory of such files; watched: targets are added and dropped live.",
)
@click.option(
    "--shard",
    "shard_text",
    metavar="K/N",
    help="Read only shard K of N of the daemons (consistent hashing of each target), "
    "so N collectors share one inventory and one database.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes, each reading its share of the daemons (about 40,000-160,000 "
    "readings/s per free core, fewer when many ranks step quickly); one is enough for 500 GPUs "
    "at 100 Hz.",
)
@DB_OPTION
@click.option("--metrics-listen", default=DEFAULT_METRICS_LISTEN, show_default=True,
              help="HOST:PORT for /metrics; 'off' to disable.")  # fmt: skip
@click.option(
    "--retention",
    default="7d",
    show_default=True,
    help="How long raw readings are kept (per-second aggregates are kept for good).",
)
@click.option("--metrics-port-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the bound /metrics port here (useful with port 0).")  # fmt: skip
@click.option(
    "--metrics-web-config",
    type=click.Path(dir_okay=False),
    envvar="PARAWATT_METRICS_WEB_CONFIG",
    help="Prometheus exporter-toolkit web config for /metrics (TLS, basic auth).",
)
@click.option(
    "--tls-ca",
    envvar="PARAWATT_TLS_CA",
    type=click.Path(dir_okay=False),
    help="gRPC over TLS: CA bundle that signs the daemons' certificates "
    "(one bundle for all daemons; also $PARAWATT_TLS_CA).",
)
@click.option(
    "--tls-cert",
    envvar="PARAWATT_TLS_CERT",
    type=click.Path(dir_okay=False),
    help="Mutual TLS: the collector's client certificate ($PARAWATT_TLS_CERT).",
)
@click.option(
    "--tls-key",
    envvar="PARAWATT_TLS_KEY",
    type=click.Path(dir_okay=False),
    help="Mutual TLS: the collector's client key ($PARAWATT_TLS_KEY).",
)
@click.option(
    "--tls-server-name",
    envvar="PARAWATT_TLS_SERVER_NAME",
    default="",
    help="Name expected in every daemon's certificate instead of its host.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def serve(daemons: tuple[str, ...], daemons_file: Path | None, shard_text: str | None,
          workers: int, db_url: str, metrics_listen: str, retention: str,
          metrics_port_file: Path | None, metrics_web_config: str | None, tls_ca: str | None,
          tls_cert: str | None, tls_key: str | None, tls_server_name: str,
          verbose: bool) -> None:  # fmt: skip
    """Collect until SIGTERM/SIGINT, then flush everything and exit."""
    from collector.service import create_collector

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if not verbose:  # alembic's "Context impl SQLiteImpl." etc.: noise unless debugging
        logging.getLogger("alembic").setLevel(logging.WARNING)
    daemons = tuple(a.strip() for arg in daemons for a in arg.split(",") if a.strip())
    if not daemons and daemons_file is None:
        raise ConfigError(
            "no daemon to subscribe to: give --daemon HOST:PORT (or PARAWATT_DAEMONS) "
            "or --daemons-file FILE"
        )
    shard = parse_shard(shard_text) if shard_text else None
    config = CollectorConfig(
        daemons=daemons, db_url=db_url, retention_s=parse_duration_s(retention),
        metrics_listen=None if metrics_listen == "off" else metrics_listen,
        daemons_file=str(daemons_file) if daemons_file is not None else None,
        shard=(shard.index, shard.count) if shard else (1, 1),
        tls=_client_tls(tls_ca, tls_cert, tls_key, tls_server_name),
        metrics_web_config=metrics_web_config or None,
    )  # fmt: skip
    if config.metrics_web_config and config.metrics_listen is None:
        raise ConfigError("--metrics-web-config needs /metrics: not with --metrics-listen off")
    if config.metrics_web_config:
        _check_web_config(config.metrics_web_config)  # before the database, to fail at once
    if metrics_port_file is not None and config.metrics_listen is None:
        raise ConfigError("--metrics-port-file needs /metrics: not with --metrics-listen off")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    if workers > 1:
        from collector.workers import WorkerPool

        collector = WorkerPool(config, workers)
    else:
        collector = create_collector(config)
    try:
        collector.start(stop)
        if collector.metrics_port is not None:
            host = config.metrics_listen.rsplit(":", 1)[0]
            scheme = collector.metrics_server.scheme
            click.echo(f"metrics on {scheme}://{host}:{collector.metrics_port}/metrics", err=True)
            if metrics_port_file is not None:
                _write_port(metrics_port_file, collector.metrics_port)
        click.echo(f"storing into {describe(collector.engine)}", err=True)
        while not stop.wait(1.0):
            pass
        click.echo("stopping: flushing to the database", err=True)
    finally:
        collector.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _client_tls(ca, cert, key, server_name) -> ClientTLS | None:
    """Checked here, once: a missing file is one line at start, not an error per reconnect."""
    path = lambda p: Path(p) if p else None  # noqa: E731
    try:
        tls = ClientTLS(ca=path(ca), cert=path(cert), key=path(key), server_name=server_name)
        if tls.enabled:
            tls.credentials()
    except TLSConfigError as exc:
        raise ConfigError(str(exc)) from None
    return tls if tls.enabled else None


def _check_web_config(path: str) -> None:
    from parawatt_proto.webconfig import WebConfigError, load_web_config

    try:
        web = load_web_config(path)
        if web.tls:
            web.ssl_context()
    except WebConfigError as exc:
        raise ConfigError(str(exc)) from None


def _write_port(path: Path, port: int) -> None:
    """Whole or not at all: a reader polling for the file never sees half a number."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(f"{port}\n")
        tmp.replace(path)
    except OSError as exc:
        raise ConfigError(f"cannot write the metrics port to {path}: {exc.strerror}") from None


@main.command("migrate")
@DB_OPTION
def migrate_cmd(db_url: str) -> None:
    """Create or upgrade the database schema."""
    engine = create_db_engine(db_url)
    try:
        migrate(engine)
        click.echo(f"{describe(engine)}: schema at revision {schema_revision(engine)}")
    finally:
        engine.dispose()


@main.command()
@DB_OPTION
@FORMAT_OPTION
@click.option("--sweep", default=None, help="Only runs tagged with this sweep.")
def runs(db_url: str, fmt: str, sweep: str | None) -> None:
    """Every run: size, batch sizes, time, GPU-hours, energy and J per sample."""
    engine = open_existing(db_url)
    try:
        rows = [tables.run_row(r) for r in queries.run_summaries(engine, sweep=sweep)]
    finally:
        engine.dispose()
    if fmt == "table" and not rows:
        click.echo(f"no runs tagged sweep={sweep}" if sweep else "no runs yet", err=True)
        return
    click.echo(tables.render(rows, tables.RUN_COLUMNS, fmt).rstrip("\n"))


@main.command()
@click.argument("run_id")
@DB_OPTION
@FORMAT_OPTION
def show(run_id: str, db_url: str, fmt: str) -> None:
    """One run and its epochs: time, energy, average power and metrics per epoch."""
    engine = open_existing(db_url)
    try:
        run = queries.run_summary(engine, run_id)
        epochs = [tables.epoch_row(e) for e in queries.epoch_summaries(engine, run_id)]
        per_step = [dataclasses.asdict(s) for s in queries.step_stats(engine, run_id)]
    finally:
        engine.dispose()
    if fmt == "json":
        out = {"run": tables.run_row(run), "epochs": epochs, "step_energy": per_step}
        click.echo(tables.render(out, (), "json"))
    elif fmt == "csv":
        click.echo(tables.render([tables.run_row(run)], (), "csv"))
        click.echo(tables.render(epochs, (), "csv").rstrip("\n"))
    else:
        click.echo(tables.run_details(run))
        click.echo()
        click.echo(
            tables.render(epochs, tables.EPOCH_COLUMNS, "table") if epochs else "no epochs yet"
        )
        if per_step:
            click.echo()
            click.echo(_step_means(per_step, "table"))


STEP_STATS_COLUMNS = (
    ("epoch", "epoch", None),
    ("steps", "steps", None),
    ("mean_duration_s", "step s", 3),
    ("mean_energy_j", "mean J/step", 2),
    ("ci95_j", "+- J (95 %)", 2),
    ("single_step_pct", "one step alone +- %", 1),
)


@main.command()
@click.argument("run_id")
@DB_OPTION
@click.option("--rank", type=click.IntRange(0, RANK_MAX), default=None,
              help="Only this rank's steps.")  # fmt: skip
@click.option("--job", is_flag=True, help="Job-wide: each step summed over every rank.")
@click.option(
    "--epoch-means",
    is_flag=True,
    help="Only the job's mean energy per step in each epoch, with its 95 % confidence "
    "interval (how steps too short to measure alone are measured).",
)
@FORMAT_OPTION
def steps(
    run_id: str, db_url: str, rank: int | None, job: bool, epoch_means: bool, fmt: str
) -> None:
    """Energy of every optimizer step: per rank (default) or job-wide (--job); the table ends
    with the job's mean energy per step in each epoch and its 95 % confidence interval.

    CSV and JSON are long format, one row per rank and step (or per step with --job; per epoch
    with --epoch-means); flags are one text cell, ';'-separated, empty when clean."""
    if job and rank is not None:
        raise ConfigError("--job sums every rank: not with --rank")
    if epoch_means and rank is not None:
        raise ConfigError("--epoch-means is job-wide (every rank): not with --rank")
    engine = open_existing(db_url)
    rows: list[dict] = []
    try:
        queries.run_summary(engine, run_id)  # an unknown run is an error, not an empty table
        if job and not epoch_means:
            rows = [tables.job_step_row(run_id, s) for s in queries.job_steps(engine, run_id)]
        elif not epoch_means:
            found = queries.rank_steps(engine, run_id, rank)
            rows = [tables.rank_step_row(run_id, s) for s in found]
        means = []
        if epoch_means or (fmt == "table" and rank is None):
            stats = queries.step_stats(engine, run_id)
            means = [{"run_id": run_id, **dataclasses.asdict(s)} for s in stats]
    finally:
        engine.dispose()
    if epoch_means:
        if fmt == "table" and not means:
            click.echo(f"no step intervals yet for run {run_id!r}", err=True)
            return
        click.echo(_step_means(means, fmt))
        return
    if fmt == "table" and not rows:
        click.echo(f"no step intervals yet for run {run_id!r}", err=True)
        return
    columns = tables.JOB_STEP_COLUMNS if job else tables.STEP_COLUMNS
    click.echo(tables.render(rows, columns, fmt).rstrip("\n"))
    if fmt == "table" and means:
        click.echo()
        click.echo(_step_means(means, fmt))


def _step_means(means: list[dict], fmt: str) -> str:
    if fmt != "table":
        return tables.render(means, (), fmt).rstrip("\n")
    return "mean energy per step (job, all ranks), 95 % confidence interval:\n" + tables.render(
        means, STEP_STATS_COLUMNS, "table"
    ).rstrip("\n")


main.add_command(report_command)

if __name__ == "__main__":
    main()
