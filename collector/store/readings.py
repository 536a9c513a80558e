"""Raw readings into SQL at 50,000+ rows/s, idempotently (part of the SQL adapter).

SQLite: the statement sqlite.insert(Reading).on_conflict_do_nothing() renders, with 500 rows per
execution: executemany would release and re-take the GIL once per row, and under load every
re-take waits for the collector's other threads (a convoy that cut throughput by 3x).
PostgreSQL: COPY straight into the table; only when that hits rows already there (a replay
after a restart) COPY into a temp table and INSERT ... ON CONFLICT DO NOTHING from it.
"""

from __future__ import annotations

import functools
from itertools import chain, repeat

import numpy as np
import psycopg
from sqlalchemy import Connection

from collector.store.models import Reading
from parawatt_proto.block import ReadingBlock
from parawatt_proto.fields import READING_FIELDS

# boot and device first, then the reading's own fields (the block's columns in this order)
_FIELDS = ("seq", "time_ns", "lost", *READING_FIELDS)
COLUMNS = ["boot_id", "device_id", *_FIELDS]
assert sorted(COLUMNS) == sorted(c.name for c in Reading.__table__.columns)
SQLITE_ROWS = 500  # x 14 columns: well under SQLite's 32,766 bound parameters


def insert_readings(
    conn: Connection, boot_pk: int, device_pk: list[int], block: ReadingBlock, postgres: bool
) -> None:
    """device_pk[k]: the database id of block.uuids[k]. Rows are built column by column in C
    (tolist, zip); only a column that has NaNs pays a Python pass to turn them into NULL."""
    rows = list(zip(repeat(boot_pk), *_columns(block, device_pk), strict=False))
    if postgres:
        _copy_readings(conn, rows)
        return
    flat = chain.from_iterable
    for i in range(0, len(rows), SQLITE_ROWS):
        part = rows[i : i + SQLITE_ROWS]
        conn.exec_driver_sql(_sqlite_insert(len(part)), tuple(flat(part)))


def _columns(block: ReadingBlock, device_pk: list[int]) -> list[list]:
    dev = np.asarray(device_pk, dtype=np.int64)[block.dev].tolist()
    out = [dev, block.seq.tolist(), block.time_ns.tolist(), block.lost.tolist()]
    for k in range(block.values.shape[1]):
        col = block.values[:, k]
        values = col.tolist()
        if np.isnan(col).any():
            values = [None if v != v else v for v in values]
        out.append(values)
    return out


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
