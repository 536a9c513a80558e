"""Interval rows (part of the SQL adapter): idempotent, latest occurrence wins, sessions merge.

An interval's identity is (run_id, rank, kind, epoch, step, device). The same identity comes
again when a rank is resumed from a checkpoint with the same run id:
- a step or epoch it runs again replaces the earlier occurrence (the one that counted for the
  model; the earlier one's energy is still in the run interval);
- the run interval of the new session is merged into the stored one: energies and the time it
  ran (duration_s) add up, start_ns/end_ns span first start to last end, flag "resumed".
A replay (a collector restart computing an interval again) never changes a row: it is not later
than the stored one. Both rules compare times, so they are idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, select, update

from collector.store.models import Interval

KEY = ("run_id", "rank", "kind", "epoch", "step", "device_id")


def write_intervals(
    conn: Connection, dialect_insert: Callable, rows: list[dict[str, Any]], chunk_rows: int
) -> None:
    others = list(latest([r for r in rows if r["kind"] != "run"], KEY, "start_ns").values())
    if others:
        stmt = _upsert(dialect_insert, tuple(others[0]))
        for i in range(0, len(others), chunk_rows):
            conn.execute(stmt, others[i : i + chunk_rows])
    for row in sorted((r for r in rows if r["kind"] == "run"), key=lambda r: r["start_ns"]):
        _write_run(conn, dialect_insert, row)


_UPSERTS: dict[tuple, Any] = {}


def _upsert(dialect_insert: Callable, columns: tuple[str, ...]):
    """The insert-or-replace-if-later statement, built once per dialect and column set: its
    .excluded collection costs milliseconds to build, at every write."""
    stmt = dialect_insert(Interval)
    key = (type(stmt), columns)
    if key not in _UPSERTS:
        _UPSERTS[key] = stmt.on_conflict_do_update(
            index_elements=list(KEY),
            set_={c: stmt.excluded[c] for c in columns if c not in KEY},
            where=stmt.excluded.start_ns > Interval.start_ns,
        )
    return _UPSERTS[key]


def latest(rows: list[dict[str, Any]], key: tuple[str, ...], by: str) -> dict[tuple, dict]:
    """One row per key, the one with the largest `by`: one statement must not update a row
    twice (PostgreSQL refuses), and a batch can hold two sessions of a resumed run."""
    out: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        k = tuple(row[c] for c in key)
        if k not in out or row[by] > out[k][by]:
            out[k] = row
    return out


def _write_run(conn: Connection, dialect_insert: Callable, row: dict[str, Any]) -> None:
    old = conn.execute(
        select(Interval).where(*(getattr(Interval, k) == row[k] for k in KEY))
    ).first()
    if old is None:
        conn.execute(dialect_insert(Interval).on_conflict_do_nothing(), [row])
    elif row["start_ns"] > old.end_ns:  # a later session of the run
        merged = merge_sessions(dict(old._mapping), row)
        conn.execute(update(Interval).where(Interval.id == old.id).values(merged))


def merge_sessions(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """One run interval from two sessions of it (pure). Uncertainties add: each session's
    counter bounds carry their own error, and the figures are bounds, not sigmas."""
    duration_s = old["duration_s"] + new["duration_s"]
    energy = _add(old["energy_j"], new["energy_j"])
    flags = {f for t in (old["flags"], new["flags"]) for f in t.split(",") if f} | {"resumed"}
    peaks = [p for p in (old["max_power_w"], new["max_power_w"]) if p is not None]
    covered_s = old["coverage"] * old["duration_s"] + new["coverage"] * new["duration_s"]
    return dict(
        start_ns=old["start_ns"],
        end_ns=new["end_ns"],
        duration_s=duration_s,
        energy_j=energy,
        active_energy_j=_add(old["active_energy_j"], new["active_energy_j"]),
        source=old["source"] if old["source"] == new["source"] else "mixed",
        power_integral_j=_add(old["power_integral_j"], new["power_integral_j"]),
        uncertainty_j=_add(old["uncertainty_j"], new["uncertainty_j"]),
        uncertainty_bound_j=_add(old.get("uncertainty_bound_j"), new.get("uncertainty_bound_j")),
        avg_power_w=energy / duration_s if energy is not None and duration_s > 0 else None,
        max_power_w=max(peaks, default=None),
        coverage=covered_s / duration_s if duration_s > 0 else new["coverage"],
        flags=",".join(sorted(flags)),
    )


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b
