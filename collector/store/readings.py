"""Raw readings into SQL at 50,000+ rows/s, idempotently (part of the SQL adapter).

SQLite: the statement sqlite.insert(Reading).on_conflict_do_nothing() renders, with 500 rows per
execution: executemany would release and re-take the GIL once per row, and under load every
re-take waits for the collector's other threads (a convoy that cut throughput by 3x).
PostgreSQL: COPY straight into the table; only when that hits rows already there (a replay
after a restart) COPY into a temp table and INSERT ... ON CONFLICT DO NOTHING from it.
"""

from __future__ import annotations

import functools
import operator

import psycopg
from sqlalchemy import Connection

from collector.store.models import Reading
from parawatt_proto.records import ReadingRec

# boot and device first, then the reading's own fields in ReadingRec order (one C call a row)
_FIELDS = ("seq", "time_ns", "lost", "power_w", "power_avg_w", "energy_j", "gpu_util_pct",
           "mem_util_pct", "memory_used_bytes", "temperature_c", "sm_clock_mhz", "mem_clock_mhz")  # fmt: skip
COLUMNS = ["boot_id", "device_id", *_FIELDS]
assert sorted(COLUMNS) == sorted(c.name for c in Reading.__table__.columns)
SQLITE_ROWS = 500  # x 14 columns: well under SQLite's 32,766 bound parameters
_get = operator.attrgetter(*_FIELDS)


def insert_readings(
    conn: Connection, boot_pk: int, device_pk: dict[str, int], rows: list[ReadingRec],
    postgres: bool,
) -> None:  # fmt: skip
    dev = device_pk
    if postgres:
        _copy_readings(conn, [(boot_pk, dev[r.device_uuid], *_get(r)) for r in rows])
        return
    for i in range(0, len(rows), SQLITE_ROWS):
        part = rows[i : i + SQLITE_ROWS]
        flat: list = []
        extend = flat.extend
        for r in part:
            extend((boot_pk, dev[r.device_uuid]))
            extend(_get(r))
        conn.exec_driver_sql(_sqlite_insert(len(part)), tuple(flat))


@functools.cache
def _sqlite_insert(rows: int) -> str:
    one = f"({', '.join('?' * len(COLUMNS))})"
    return (
        f"INSERT INTO reading ({', '.join(COLUMNS)}) VALUES {', '.join([one] * rows)} "
        "ON CONFLICT DO NOTHING"
    )


def _copy_readings(conn: Connection, tuples: list[tuple]) -> None:
    cols = ", ".join(COLUMNS)
    raw = conn.connection.driver_connection
    try:
        with raw.transaction():  # a savepoint: a duplicate undoes only this COPY
            _copy(raw, f"COPY reading ({cols}) FROM STDIN", tuples)
        return
    except psycopg.errors.UniqueViolation:
        pass
    conn.exec_driver_sql(
        "CREATE TEMP TABLE IF NOT EXISTS reading_in (LIKE reading INCLUDING DEFAULTS)"
        " ON COMMIT DELETE ROWS"
    )
    _copy(raw, f"COPY reading_in ({cols}) FROM STDIN", tuples)
    conn.exec_driver_sql(
        f"INSERT INTO reading ({cols}) SELECT {cols} FROM reading_in ON CONFLICT DO NOTHING"
    )
    conn.exec_driver_sql("TRUNCATE reading_in")


def _copy(raw, sql: str, tuples: list[tuple]) -> None:
    with raw.cursor() as cur, cur.copy(sql) as copy:
        for t in tuples:
            copy.write_row(t)
