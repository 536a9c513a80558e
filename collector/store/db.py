"""Engine creation, schema migration and database-error translation (the SQL adapter's edge)."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url

from collector.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"


def create_db_engine(url: str) -> Engine:
    """An engine for a sqlite:/// or postgresql+psycopg:// URL, tuned for the collector's writes."""
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError as exc:
        raise ConfigError(f"bad database URL {url!r}: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, parsed.database)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 5})
        except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
            raise ConfigError(f"bad database URL {url!r}: {exc}") from None
    raise ConfigError(f"unsupported database {backend!r}: use sqlite:/// or postgresql+psycopg://")


def _sqlite_engine(url: str, database: str | None) -> Engine:
    if database and database != ":memory:":
        if Path(database).expanduser().is_dir():
            raise ConfigError(f"bad database URL {url!r}: {database} is a directory")
        parent = Path(database).expanduser().resolve().parent
        if not parent.is_dir():
            raise ConfigError(f"bad database URL {url!r}: directory {parent} does not exist")
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        # WAL lets the CLI and /metrics read while the writer commits; NORMAL is durable across
        # process crashes (not power loss), which is what a telemetry store needs.
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


def sqlite_file(engine: Engine) -> Path | None:
    """The file of a SQLite engine (None: PostgreSQL, or SQLite in memory)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database).expanduser().resolve()


def file_identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at `path` now (None: no file there). A SQLite file deleted
    or replaced under an open engine keeps taking its writes, into the unlinked inode: only
    its identity changing says so."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError:  # EACCES, ESTALE on NFS, ...: nothing says the file changed
        return UNKNOWN_FILE
    return st.st_dev, st.st_ino


UNKNOWN_FILE = (-1, -1)  # file_identity when the path cannot be looked at just now


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def open_existing(db_url: str) -> Engine:
    """An engine on a database that already holds the parawatt schema (never creates one)."""
    try:
        url = make_url(db_url)
    except Exception:  # sqlalchemy raises several types for a malformed URL
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


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent; run at every start-up)."""
    with translate_errors("migrating the database", engine), engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # collectors starting together migrate in turn
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7259412316)")
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def migrate_when_ready(
    engine: Engine, stop: threading.Event, timeout_s: float, backoff_s: tuple[float, float]
) -> None:
    """`migrate`, retrying transient errors (a database still starting) for up to `timeout_s`
    with doubling waits; a permanent error, or `stop`, raises at once."""
    deadline = time.monotonic() + timeout_s
    wait, longest = backoff_s
    while True:
        try:
            migrate(engine)
            return
        except StoreError as exc:
            left = deadline - time.monotonic()
            if not exc.transient or left <= 0:
                raise
            log.warning("%s (retrying for another %.1f s)", exc, left)
            if stop.wait(min(wait, left)):
                raise
            wait = min(wait * 2, longest)


def schema_revision(engine: Engine) -> str | None:
    with translate_errors("reading the schema version", engine), engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def describe(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


@contextlib.contextmanager
def translate_errors(doing: str, engine: Engine | None = None) -> Iterator[None]:
    """Turn driver errors (server gone, disk full, locked, auth) into StoreError."""
    try:
        yield
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        where = f" at {describe(engine)}" if engine is not None else ""
        raise StoreError(
            f"database error while {doing}{where}: {_first_line(exc)}", not _permanent(exc.orig)
        ) from exc
    except sqlalchemy.exc.DatabaseError as exc:
        raise StoreError(f"database error while {doing}: {_first_line(exc)}", False, True) from exc
    except psycopg.OperationalError as exc:  # raised by the COPY path, which bypasses SQLAlchemy
        raise StoreError(
            f"database error while {doing}: {_text(exc)}", not _permanent(exc)
        ) from exc
    except psycopg.Error as exc:
        raise StoreError(f"database error while {doing}: {_text(exc)}", False, True) from exc


# What no retry mends: a wrong role, database, password or permission, a file that is not a
# database or cannot be opened. Connection refused, a server starting up or shutting down, a
# lock or a full disk are retried.
_PERMANENT_SQLSTATE_CLASSES = ("28", "3D", "42")
_PERMANENT_PG = re.compile(
    r"FATAL:\s+(role .* does not exist|database .* does not exist|password authentication "
    r"failed|no pg_hba\.conf entry|permission denied)"
)
_PERMANENT_SQLITE = {"SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_NOTADB", "SQLITE_PERM"}


def _permanent(orig: BaseException | None) -> bool:
    if orig is None:
        return False
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate and sqlstate[:2] in _PERMANENT_SQLSTATE_CLASSES:
        return True
    if getattr(orig, "sqlite_errorname", None) in _PERMANENT_SQLITE:
        return True
    return bool(_PERMANENT_PG.search(str(orig)))


def _first_line(exc: sqlalchemy.exc.DBAPIError) -> str:
    return _text(exc.orig if exc.orig is not None else exc)


def _text(exc: BaseException) -> str:
    """The error's first line, control characters escaped: a database error may quote a value
    that came from a marker, and it ends up in a log line or on a terminal."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
