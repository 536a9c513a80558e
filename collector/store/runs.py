"""Run and rank rows from RUN_START / RUN_END markers (part of the SQL adapter).

Idempotent like everything the writer does: a replayed RUN_START changes nothing, a replayed
RUN_END sets the same values again.

A rank resumed from a checkpoint under the same run id starts a new session: a RUN_START later
than the rank's (or run's) end opens it again (status running, no end; run_rank.start_ns is the
session's start), and the session's RUN_END is the one kept: a RUN_END earlier than the rank's
current session (a replay of an older one) changes nothing. run.start_ns stays the first start.

Several collectors may store the ranks of one run (one per group of nodes): every rule here is
a single atomic statement that only moves start earlier, end later, and keeps a rank's failure,
so the row ends the same whichever collector's markers land first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, and_, case, select, update

from collector.store.models import Run, RunRank
from parawatt_proto.records import MarkerRec, RunConfigRec


def run_start_rows(m: MarkerRec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run row and the rank row a RUN_START stores (write_run_starts)."""
    c = m.config or RunConfigRec()
    run = dict(
        run_id=m.run_id,
        model=c.model,
        dataset=c.dataset,
        world_size=c.world_size,
        nodes=c.nodes,
        global_batch_size=c.global_batch_size,
        local_batch_size=c.local_batch_size,
        accumulation_steps=c.accumulation_steps,
        parameter_count=c.parameter_count,
        dataset_size=c.dataset_size,
        epochs_planned=c.epochs,
        steps_per_epoch=c.steps_per_epoch,
        seed=c.seed,
        amp=c.amp,
        device_name=c.device_name,
        recipe=dict(c.recipe),
        tags=dict(c.tags),
        software=dict(
            torch=c.torch_version,
            cuda=c.cuda_version,
            driver=c.driver_version,
            backend=c.backend,
        ),
        hardware=dict(
            device_name=c.device_name,
            hostname=c.hostname or m.hostname,
            local_world_size=c.local_world_size,
            nodes=c.nodes,
        ),
        status="running",
        start_ns=m.time_ns,
        end_ns=None,
        metrics={},
        run_token_sha256=m.token_sha256,  # the owner: set by the first stored RUN_START only
    )
    rank = dict(run_id=m.run_id, rank=m.rank, hostname=m.hostname, local_rank=m.local_rank,
                device_uuid=m.device_uuid, start_ns=m.time_ns, end_ns=None, status="running",
                start_temperature_c=None, idle_power_w=None, metrics={})  # fmt: skip
    return run, rank


class RunStartUpserts:
    """The three upserts RUN_STARTs need, built once per Store: building one costs ~5 ms
    (.excluded, case()), which one statement per marker paid 30,000 times in a RUN_START flood
    while every node's readings waited. Everything a marker brings is a bound parameter
    (`excluded`), so a batch of run starts is one executemany per statement."""

    _KEEP = ("run_id", "status", "end_ns", "metrics", "start_ns", "run_token_sha256")
    _SESSION = ("hostname", "local_rank", "device_uuid", "start_ns", "end_ns", "status",
                "idle_power_w", "metrics")  # fmt: skip

    def __init__(self, dialect_insert: Callable) -> None:
        columns = run_start_rows(MarkerRec("", 0, "run_start", 0, 0, 0))[0]
        # Rank 0's configuration wins (its device name is the run's hardware); every rank's
        # start can only move the run's start earlier, and reopens a run that ended before it.
        self.run_rank0 = self._run(dialect_insert, [k for k in columns if k not in self._KEEP])
        self.run_other = self._run(dialect_insert, [])
        stmt = dialect_insert(RunRank)
        self.rank = stmt.on_conflict_do_update(
            index_elements=["run_id", "rank"],
            set_={k: stmt.excluded[k] for k in self._SESSION},
            where=and_(RunRank.end_ns.is_not(None), RunRank.end_ns < stmt.excluded.start_ns),
        )

    @staticmethod
    def _run(dialect_insert: Callable, config: list[str]):
        stmt = dialect_insert(Run)
        new = stmt.excluded.start_ns
        reopened = and_(Run.end_ns.is_not(None), Run.end_ns < new)
        set_ = {k: stmt.excluded[k] for k in config}
        set_ |= {
            "start_ns": case((new < Run.start_ns, new), else_=Run.start_ns),
            "status": case((reopened, "running"), else_=Run.status),
            "end_ns": case((reopened, None), else_=Run.end_ns),
        }
        return stmt.on_conflict_do_update(index_elements=["run_id"], set_=set_)


def write_run_starts(conn: Connection, upserts: RunStartUpserts, markers: list[MarkerRec]) -> None:
    """Store RUN_STARTs (in time order per run): one executemany per statement for them all.
    Rank 0's and the other ranks' run upserts commute (start only moves earlier, a reopen
    needs an end before the start, the configuration is rank 0's whatever the order), so
    splitting them keeps the result of writing the markers one by one."""
    rows = [run_start_rows(m) for m in markers]
    for stmt, keep in ((upserts.run_rank0, True), (upserts.run_other, False)):
        runs = [run for (run, _), m in zip(rows, markers, strict=True) if (m.rank == 0) == keep]
        if runs:
            conn.execute(stmt, runs)
    conn.execute(upserts.rank, [rank for _, rank in rows])


def owned_markers(
    conn: Connection, markers: list[tuple[str | None, MarkerRec]]
) -> tuple[list[tuple[str | None, MarkerRec]], list[MarkerRec]]:
    """(kept, refused): markers of a run whose stored owner (the token hash of its first
    stored RUN_START) is not theirs are refused, whatever the streams showed (another
    collector may have stored the run meanwhile)."""
    ids = sorted({m.run_id for _, m in markers})
    owners: dict[str, bytes] = {}
    for i in range(0, len(ids), 500):
        rows = conn.execute(
            select(Run.run_id, Run.run_token_sha256).where(Run.run_id.in_(ids[i : i + 500]))
        )
        owners.update((run_id, bytes(sha or b"")) for run_id, sha in rows)
    kept, refused = [], []
    for boot_id, m in markers:
        owner = owners.get(m.run_id)
        if owner is None and m.kind == "run_start":
            owners[m.run_id] = m.token_sha256
        elif owner is not None and owner != m.token_sha256:
            refused.append(m)
            continue
        kept.append((boot_id, m))
    return kept, refused


def write_run_end(conn: Connection, m: MarkerRec) -> None:
    status = m.status or "completed"
    current = conn.execute(
        update(RunRank)
        .where(RunRank.run_id == m.run_id, RunRank.rank == m.rank, RunRank.start_ns <= m.time_ns)
        .values(end_ns=m.time_ns, status=status, metrics=clean_metrics(m.metrics))
    )
    if current.rowcount == 0 and _rank_known(conn, m):
        return  # the end of an earlier session of this rank: a later one is under way
    latest = case(
        (Run.end_ns.is_(None), m.time_ns), (Run.end_ns < m.time_ns, m.time_ns), else_=Run.end_ns
    )
    values: dict[str, Any] = {"end_ns": latest}
    if m.rank == 0:  # a rank's failure sticks, whichever collector stores which end first
        failed = and_(Run.status == "failed", Run.end_ns.is_not(None))
        values.update(status=case((failed, "failed"), else_=status),
                      metrics=clean_metrics(m.metrics))  # fmt: skip
    elif status == "failed":
        values["status"] = status
    conn.execute(update(Run).where(Run.run_id == m.run_id).values(values))


def _rank_known(conn: Connection, m: MarkerRec) -> bool:
    where = (RunRank.run_id == m.run_id, RunRank.rank == m.rank)
    return conn.scalar(select(RunRank.start_ns).where(*where)) is not None


def finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def clean_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN/inf (PostgreSQL rejects them): store them as null."""
    return {str(k): finite(float(v)) for k, v in dict(metrics).items()}
