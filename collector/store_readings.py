"""Raw readings into SQL at 50,000+ rows/s, idempotently (part of the SQL adapter).

SQLite: the statement sqlite.insert(Reading).on_conflict_do_nothing() renders, with 500 rows per
execution: executemany would release and re-take the GIL once per row, and under load every
re-take waits for the collector's other threads (a convoy that cut throughput by 3x).
PostgreSQL: COPY straight into the table; only when that hits rows already there (a replay
after a restart) COPY into a temp table and INSERT ... ON CONFLICT DO NOTHING from it.
"""

from __future__ import annotations

import functools

import psycopg
from sqlalchemy import Connection

from collector.models import Reading
from collector.records import ReadingRec

COLUMNS = [c.name for c in Reading.__table__.columns]
SQLITE_ROWS = 500  # x 14 columns: well under SQLite's 32,766 bound parameters


def insert_readings(
    conn: Connection, boot_pk: int, device_pk: dict[str, int], rows: list[ReadingRec],
    postgres: bool,
) -> None:  # fmt: skip
    dev = device_pk
    if postgres:
        _copy_readings(conn, [
            (boot_pk, r.seq, dev[r.device_uuid], r.time_ns, r.lost, r.power_w, r.power_avg_w,
             r.energy_j, r.gpu_util_pct, r.mem_util_pct, r.memory_used_bytes, r.temperature_c,
             r.sm_clock_mhz, r.mem_clock_mhz)
            for r in rows
        ])  # fmt: skip
        return
    for i in range(0, len(rows), SQLITE_ROWS):
        part = rows[i : i + SQLITE_ROWS]
        flat = [
            v
            for r in part
            for v in (boot_pk, r.seq, dev[r.device_uuid], r.time_ns, r.lost, r.power_w,
                      r.power_avg_w, r.energy_j, r.gpu_util_pct, r.mem_util_pct,
                      r.memory_used_bytes, r.temperature_c, r.sm_clock_mhz, r.mem_clock_mhz)
        ]  # fmt: skip
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
