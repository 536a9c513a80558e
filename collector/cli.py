"""`collector`: serve (ingest, join, store, /metrics), runs, show, migrate.

Thin: every command builds the same objects the tests use (create_collector, queries) and turns
the project's exceptions into one clear message and exit status 1, never a traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click
from sqlalchemy.engine import make_url

from collector import queries, tables
from collector.config import (
    DEFAULT_DB_URL,
    DEFAULT_METRICS_LISTEN,
    CollectorConfig,
    parse_duration_s,
)
from collector.db import create_db_engine, describe, migrate, schema_revision
from collector.errors import CollectorError, ConfigError, StoreError

DB_OPTION = click.option(
    "--db", "db_url", default=DEFAULT_DB_URL, show_default=True,
    help="Database URL: sqlite:///FILE or postgresql+psycopg://USER@HOST:PORT/DB.",
)  # fmt: skip
FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(tables.FORMATS), default="table", show_default=True
)


class _Group(click.Group):
    """Turns CollectorError from any command into `error: ...` and exit status 1."""

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


@main.command()
@click.option("--daemon", "daemons", multiple=True, metavar="HOST:PORT",
              help="A power daemon to subscribe to (repeat for every node).")  # fmt: skip
@DB_OPTION
@click.option("--metrics-listen", default=DEFAULT_METRICS_LISTEN, show_default=True,
              help="HOST:PORT for /metrics; 'off' to disable.")  # fmt: skip
@click.option(
    "--retention",
    default="7d",
    show_default=True,
    help="How long raw readings are kept (per-second aggregates are kept for good).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def serve(daemons: tuple[str, ...], db_url: str, metrics_listen: str, retention: str,
          verbose: bool) -> None:  # fmt: skip
    """Collect until SIGTERM/SIGINT, then flush everything and exit."""
    from collector.service import create_collector

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    config = CollectorConfig(
        daemons=daemons, db_url=db_url, retention_s=parse_duration_s(retention),
        metrics_listen=None if metrics_listen == "off" else metrics_listen,
    )  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    collector = create_collector(config)
    try:
        collector.start()
        if collector.metrics_port is not None:
            host = config.metrics_listen.rsplit(":", 1)[0]
            click.echo(f"metrics on http://{host}:{collector.metrics_port}/metrics", err=True)
        click.echo(f"storing into {describe(collector.engine)}", err=True)
        while not stop.wait(1.0):
            pass
        click.echo("stopping: flushing to the database", err=True)
    finally:
        collector.close()


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
    engine = _open_existing(db_url)
    try:
        rows = [tables.run_row(r) for r in queries.run_summaries(engine, sweep=sweep)]
    finally:
        engine.dispose()
    if fmt == "table" and not rows:
        click.echo("no runs yet", err=True)
        return
    click.echo(tables.render(rows, tables.RUN_COLUMNS, fmt).rstrip("\n"))


@main.command()
@click.argument("run_id")
@DB_OPTION
@FORMAT_OPTION
def show(run_id: str, db_url: str, fmt: str) -> None:
    """One run and its epochs: time, energy, average power and metrics per epoch."""
    engine = _open_existing(db_url)
    try:
        run = queries.run_summary(engine, run_id)
        epochs = [tables.epoch_row(e) for e in queries.epoch_summaries(engine, run_id)]
    finally:
        engine.dispose()
    if fmt == "json":
        click.echo(tables.render({"run": tables.run_row(run), "epochs": epochs}, (), "json"))
    elif fmt == "csv":
        click.echo(tables.render([tables.run_row(run)], (), "csv"))
        click.echo(tables.render(epochs, (), "csv").rstrip("\n"))
    else:
        click.echo(tables.run_details(run))
        click.echo()
        click.echo(
            tables.render(epochs, tables.EPOCH_COLUMNS, "table") if epochs else "no epochs yet"
        )


def _open_existing(db_url: str):
    """An engine on a database that holds the parawatt schema (never creates one)."""
    try:
        url = make_url(db_url)
    except Exception:
        raise ConfigError(f"bad database URL {db_url!r}") from None
    sqlite_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if sqlite_file and not Path(url.database).expanduser().exists():
        raise StoreError(f"no database file {url.database} (start `collector serve` first)")
    engine = create_db_engine(db_url)
    if schema_revision(engine) is None:
        engine.dispose()
        raise StoreError(
            f"{describe(engine)} holds no parawatt data (no schema; run `collector migrate`)"
        )
    return engine


if __name__ == "__main__":
    main()
