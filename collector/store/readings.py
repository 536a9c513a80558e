"""Raw readings into SQL at 50,000+ rows/s, idempotently (part of the SQL adapter).

SQLite: the statement sqlite.insert(Reading).on_conflict_do_nothing() renders, with 500 rows per
execution: executemany would release and re-take the GIL once per row, and under load every
re-take waits for the collector's other threads (a convoy that cut throughput by 3x).
PostgreSQL: binary COPY (built from the columns by numpy) straight into the table; only when
that hits rows already there (a replay after a restart) COPY into a temp table and INSERT ...
ON CONFLICT DO NOTHING from it.
"""

from __future__ import annotations

import functools
from itertools import chain, repeat

import numpy as np
import psycopg
from sqlalchemy import Connection

from collector.store.models import Reading
from parawatt_proto.block import ReadingBlock, none_for_nan
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
    if postgres:
        _copy_readings(conn, copy_binary(boot_pk, device_pk, block))
        return
    rows = list(zip(repeat(boot_pk), *_columns(block, device_pk), strict=False))
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
            values = none_for_nan(values)
        out.append(values)
    return out


@functools.cache
def _sqlite_insert(rows: int) -> str:
    one = f"({', '.join('?' * len(COLUMNS))})"
    return (
        f"INSERT INTO reading ({', '.join(COLUMNS)}) VALUES {', '.join([one] * rows)} "
        "ON CONFLICT DO NOTHING"
    )


def copy_binary(boot_pk: int, device_pk: list[int], block: ReadingBlock) -> bytes:
    """The block as PostgreSQL's binary COPY stream (COLUMNS order), built from the columns
    with numpy, no Python per row: each row is int16 field count, then per field int32 length
    (-1: NULL) and big-endian bytes (bigint 8, boolean 1, double precision 8). Rows are laid
    out per NULL pattern (a NULL has no bytes): one fixed-size record type per pattern, and a
    device's readings share one or two patterns."""
    n = len(block)
    nulls = np.isnan(block.values)
    if nulls.any():
        patterns, inverse = np.unique(nulls, axis=0, return_inverse=True)
        inverse = inverse.reshape(n)
    else:
        patterns, inverse = nulls[:1], None
    dev = np.asarray(device_pk, dtype=np.int64)[block.dev]
    parts = [_COPY_HEADER]
    for k, pattern in enumerate(patterns):
        rows = np.arange(n) if inverse is None else np.flatnonzero(inverse == k)
        fields = [("n", ">i2")]
        fields += [
            (f"{c}{x}", t) for c in ("b", "d", "s", "t") for x, t in (("_l", ">i4"), ("", ">i8"))
        ]
        fields += [("lost_l", ">i4"), ("lost", "u1")]
        for j, null in enumerate(pattern.tolist()):
            fields.append((f"v{j}_l", ">i4"))
            if not null:
                fields.append((f"v{j}", ">f8"))
        out = np.empty(len(rows), dtype=np.dtype(fields))
        out["n"] = len(COLUMNS)
        for c, values in (("b", boot_pk), ("d", dev[rows]), ("s", block.seq[rows]),
                          ("t", block.time_ns[rows])):  # fmt: skip
            out[f"{c}_l"] = 8
            out[c] = values
        out["lost_l"], out["lost"] = 1, block.lost[rows]
        for j, null in enumerate(pattern.tolist()):
            out[f"v{j}_l"] = -1 if null else 8
            if not null:
                out[f"v{j}"] = block.values[rows, j]
        parts.append(out.tobytes())
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def _copy_readings(conn: Connection, payload: bytes) -> None:
    cols = ", ".join(COLUMNS)
    raw = conn.connection.driver_connection
    try:
        with raw.transaction():  # a savepoint: a duplicate undoes only this COPY
            _copy(raw, f"COPY reading ({cols}) FROM STDIN (FORMAT BINARY)", payload)
        return
    except psycopg.errors.UniqueViolation:
        pass
    conn.exec_driver_sql(
        "CREATE TEMP TABLE IF NOT EXISTS reading_in (LIKE reading INCLUDING DEFAULTS)"
        " ON COMMIT DELETE ROWS"
    )
    _copy(raw, f"COPY reading_in ({cols}) FROM STDIN (FORMAT BINARY)", payload)
    conn.exec_driver_sql(
        f"INSERT INTO reading ({cols}) SELECT {cols} FROM reading_in ON CONFLICT DO NOTHING"
    )
    conn.exec_driver_sql("TRUNCATE reading_in")


def _copy(raw, sql: str, payload: bytes) -> None:
    with raw.cursor() as cur, cur.copy(sql) as copy:
        copy.write(payload)
