"""`parawatt.results(run_id, db=...)`: a run's energy read back from the collector's database.

Plain dataclasses (no ORM, no SQL types); the reading itself is the collector's own queries
(`collector.store.queries`), imported only when results are asked for. Why not the contract
package: these are queries over the collector's SQL schema, not the wire contract, and a second
copy here would drift from the schema the collector migrates. Why inside the function: `import
parawatt` in a training job must stay light (grpc and the contract only, DESIGN.md); only a
caller of results() needs the collector and SQLAlchemy installed. tests/test_layout.py lists it
as the one exception to the direction of imports.

    res = parawatt.results(run.id, db="sqlite:///parawatt.db", wait_s=30)
    res.energy_j, res.uncertainty_j, res.epochs[0].energy_j
    res.steps          # every rank's steps: Step(rank, step, ..., energy_j, uncertainty_j)
    res.job_steps      # the same per step summed over ranks (rank None)
    res.to_pandas()    # steps as a DataFrame (pandas optional)
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

DEFAULT_DB = "sqlite:///parawatt.db"
ENV_DB = "PARAWATT_DB"


class ResultsError(RuntimeError):
    """The database cannot be read, or holds no such run; the message says which."""


@dataclass(frozen=True)
class Step:
    rank: int | None  # None: the whole job (every rank's interval of the step summed)
    step: int
    epoch: int
    start_ns: int
    end_ns: int
    duration_s: float
    energy_j: float | None
    active_energy_j: float | None
    uncertainty_j: float | None
    coverage: float
    flags: tuple[str, ...]
    ranks: int = 1


@dataclass(frozen=True)
class Epoch:
    epoch: int
    start_ns: int
    end_ns: int
    duration_s: float
    steps: int
    energy_j: float | None
    active_energy_j: float | None
    avg_power_w: float | None
    metrics: dict
    flags: tuple[str, ...]


@dataclass(frozen=True)
class Results:
    run_id: str
    status: str  # completed | failed | interrupted | running
    complete: bool  # every rank's run and step intervals are in the database
    world_size: int
    nodes: int
    duration_s: float
    energy_j: float | None  # GPUs + CPU packages + DRAM where measured
    uncertainty_j: float
    gpu_energy_j: float | None
    cpu_energy_j: float | None
    active_energy_j: float | None
    metrics: dict
    flags: tuple[str, ...]
    epochs: tuple[Epoch, ...]
    steps: tuple[Step, ...]  # per rank, ordered by step then rank
    job_steps: tuple[Step, ...]

    def steps_of(self, rank: int) -> list[Step]:
        return [s for s in self.steps if s.rank == rank]

    def to_pandas(self, table: str = "steps"):
        """ "steps" (per rank), "job_steps" or "epochs" as a pandas DataFrame (one value a cell)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas() needs pandas (pip install pandas)") from None
        if table not in ("steps", "job_steps", "epochs"):
            raise ValueError(f"table must be steps, job_steps or epochs, not {table!r}")
        rows = [asdict(r) for r in getattr(self, table)]
        for row in rows:
            row["flags"] = ";".join(row["flags"])
            for key, value in row.pop("metrics", {}).items():
                row[f"metric_{key}"] = value
        return pd.DataFrame(rows)


def results(run_id: str, db: str | None = None, wait_s: float = 0.0) -> Results:
    """Read a run's energy from the collector's database (SQLite or PostgreSQL URL; default
    $PARAWATT_DB, else sqlite:///parawatt.db). `wait_s`: wait up to that long for the run to be
    in the database and its intervals complete (the collector joins a few seconds behind)."""
    from collector.errors import CollectorError, UnknownRunError
    from collector.store import queries
    from collector.store.db import open_existing

    url = db or os.environ.get(ENV_DB) or DEFAULT_DB
    deadline = time.monotonic() + max(0.0, wait_s)
    engine = None
    try:
        while True:
            found = None
            try:
                engine = engine or open_existing(url)
                found = _read(queries, engine, run_id)
            except UnknownRunError as exc:
                error = exc
            except CollectorError as exc:  # e.g. no database yet: the collector may be starting
                error = exc
                if engine is not None:
                    engine.dispose()
                engine = None
            late = time.monotonic() >= deadline
            if found is not None and (found.complete or late):
                return found
            if late:
                raise ResultsError(str(error))
            time.sleep(0.2)
    finally:
        if engine is not None:
            engine.dispose()


def _read(queries, engine, run_id: str) -> Results:
    run = queries.run_summary(engine, run_id)
    ranks = queries.rank_steps(engine, run_id)
    job = queries.job_steps(engine, run_id)
    epochs = queries.epoch_summaries(engine, run_id)
    steps = tuple(
        Step(s.rank, s.step, s.epoch, s.start_ns, s.end_ns, s.duration_s, s.energy_j,
             s.active_energy_j, s.uncertainty_j, s.coverage, tuple(sorted(s.flags)))
        for s in ranks
    )  # fmt: skip
    complete = (
        run.status != "running"
        and "partial" not in run.flags
        and len(steps) >= run.steps * run.world_size
        and all(s.energy_j is not None for s in steps)
    )
    return Results(
        run_id=run.run_id, status=run.status, complete=complete, world_size=run.world_size,
        nodes=run.nodes, duration_s=run.duration_s, energy_j=run.energy_j,
        uncertainty_j=run.energy_uncertainty_j, gpu_energy_j=run.gpu_energy_j,
        cpu_energy_j=run.cpu_energy_j, active_energy_j=run.active_energy_j,
        metrics=dict(run.final_metrics), flags=tuple(sorted(run.flags)),
        epochs=tuple(
            Epoch(e.epoch, e.start_ns, e.end_ns, e.duration_s, e.steps, e.energy_j,
                  e.active_energy_j, e.avg_power_w, dict(e.metrics), tuple(sorted(e.flags)))
            for e in epochs
        ),
        steps=steps,
        job_steps=tuple(
            Step(None, j.step, j.epoch, j.start_ns, j.end_ns, j.duration_s, j.energy_j,
                 j.active_energy_j, j.uncertainty_j, j.coverage, tuple(sorted(j.flags)), j.ranks)
            for j in job
        ),
    )  # fmt: skip
