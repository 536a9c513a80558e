"""Read-side queries: runs, epochs and job-level step energy as plain records.

API (shared with the report; `db` is an Engine, a Connection or a Session):

    run_summaries(db, sweep: str | None = None, run_ids: Sequence[str] | None = None)
        -> list[RunSummary]            # ordered by start time; sweep filters tags["sweep"]
    run_summary(db, run_id) -> RunSummary            # raises UnknownRunError
    epoch_summaries(db, run_id) -> list[EpochSummary]  # ordered by epoch
    step_energies(db, run_id) -> list[float]
        # job-level energy (J) per optimizer step: sum over ranks (devices) of the step's
        # interval energy_j, ordered by step; steps without energy left out
    job_steps(db, run_id) -> list[JobStep]
        # the same with duration, ranks seen, active energy, uncertainty, coverage and flags
    rank_steps(db, run_id, rank=None) -> list[RankStep]
        # every rank's own step intervals (GPU), ordered by step then rank
    step_stats(db, run_id) -> list[EpochStepStats]
        # per epoch: the job's mean energy per step with a 95 % confidence interval
        # (collector.energy.steps): what short steps can be measured as
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, distinct, func, select
from sqlalchemy.orm import Session

from collector.energy.steps import EpochStepStats, epoch_step_stats
from collector.errors import UnknownRunError
from collector.records import shares_device
from collector.store.db import translate_errors
from collector.store.models import Device, Interval, Marker, Run, RunRank
from collector.summary import EpochSummary, RunSummary

Db = Engine | Connection | Session


@dataclass(frozen=True)
class JobStep:
    """One optimizer step of the whole job: every rank's interval of that step summed."""

    step: int
    epoch: int
    start_ns: int  # earliest rank's start
    end_ns: int  # latest rank's end
    duration_s: float
    ranks: int  # intervals (ranks) that have the step
    energy_j: float | None  # None when no rank's interval has energy
    uncertainty_j: float
    flags: frozenset[str]
    active_energy_j: float | None = None  # None unless every rank's interval has it
    coverage: float = 1.0  # the lowest rank's


@dataclass(frozen=True)
class RankStep:
    """One optimizer step of one rank: its interval on the rank's device."""

    rank: int
    step: int
    epoch: int
    start_ns: int
    end_ns: int
    duration_s: float
    energy_j: float | None
    active_energy_j: float | None
    uncertainty_j: float | None
    coverage: float
    flags: frozenset[str]
    device_uuid: str


@contextlib.contextmanager
def _connect(db: Db) -> Iterator[Connection]:
    with translate_errors("querying the database"):
        if isinstance(db, Engine):
            with db.connect() as conn:
                yield conn
        elif isinstance(db, Session):
            yield db.connection()
        else:
            yield db


def _flags(texts) -> frozenset[str]:
    return frozenset(f for t in texts if t for f in t.split(","))


def _sum(values: list[float | None]) -> float | None:
    """Sum, or None when any part is unknown (a partial sum would silently undercount)."""
    return None if not values or any(v is None for v in values) else float(sum(values))


def run_summaries(
    db: Db, sweep: str | None = None, run_ids: Sequence[str] | None = None
) -> list[RunSummary]:
    with _connect(db) as conn:
        query = select(Run).order_by(Run.start_ns, Run.run_id)
        if run_ids is not None:
            query = query.where(Run.run_id.in_(list(run_ids)))
        runs = [r for r in conn.execute(query) if sweep is None or r.tags.get("sweep") == sweep]
        ids = [r.run_id for r in runs]
        if not ids:
            return []
        energy = _run_energy(conn, ids)
        steps = dict(conn.execute(
            select(Marker.run_id, func.count(distinct(Marker.step)))
            .where(Marker.run_id.in_(ids), Marker.kind == "step_end").group_by(Marker.run_id)
        ).all())  # fmt: skip
        epochs = dict(conn.execute(
            select(Marker.run_id, func.count(distinct(Marker.epoch)))
            .where(Marker.run_id.in_(ids), Marker.kind == "epoch_end").group_by(Marker.run_id)
        ).all())  # fmt: skip
        last_seen = dict(conn.execute(
            select(Marker.run_id, func.max(Marker.time_ns))
            .where(Marker.run_id.in_(ids)).group_by(Marker.run_id)
        ).all())  # fmt: skip
        ranks = defaultdict(list)
        for rr in conn.execute(select(RunRank).where(RunRank.run_id.in_(ids))):
            ranks[rr.run_id].append(rr)
        names = dict(conn.execute(select(Device.uuid, Device.name).where(
            Device.uuid.in_({rr.device_uuid for rs in ranks.values() for rr in rs})
        )).all())  # fmt: skip
        metrics = _final_metrics(conn, ids)
    return [
        _summary(r, energy.get(r.run_id), steps.get(r.run_id, 0), epochs.get(r.run_id, 0),
                 last_seen.get(r.run_id), ranks[r.run_id], metrics.get(r.run_id, {}), names)
        for r in runs
    ]  # fmt: skip


def _run_energy(conn: Connection, ids: list[str]) -> dict[str, dict]:
    """Per run: run-interval sums by device kind; epoch intervals while the run is open.

    The uncertainty is summed linearly over devices: each interval's uncertainty_j is a
    near-worst-case bound, not a sigma, and the bounds' errors are not independent (a node's
    counters update in step, ranks run the same work), so root-sum-square would understate it.
    Also per run: the lowest rank's GPU run interval (start, end, time it ran) for the time a
    resumed run spent between its sessions, and how many ranks' GPU intervals are stored.
    A device several ranks share counts once (_first_per_device)."""
    out: dict[str, dict] = {}
    for kind in ("run", "epoch"):
        rows = conn.execute(
            select(Interval.run_id, Device.kind, Interval.energy_j, Interval.active_energy_j,
                   Interval.uncertainty_j, Interval.flags, Interval.rank, Interval.start_ns,
                   Interval.end_ns, Interval.duration_s, Interval.device_id, Interval.epoch)
            .join(Device, Device.id == Interval.device_id)
            .where(Interval.run_id.in_([i for i in ids if i not in out]), Interval.kind == kind)
            .order_by(Interval.rank)
        )  # fmt: skip
        seen: dict[tuple, list] = {}
        for run_id, dev_kind, e, active, u, flags, rank, start, end, secs, dev, epoch in rows:
            acc = out.setdefault(run_id, {"gpu": [], "cpu": [], "active": [], "u": 0.0,
                                          "flags": set(), "partial": kind == "epoch",
                                          "gpu_ranks": 0})  # fmt: skip
            acc["flags"] |= _flags([flags])
            if dev_kind == "gpu":
                acc["gpu_ranks"] += 1
                if kind == "run" and rank < acc.get("lead", (rank + 1,))[0]:
                    acc["lead"] = (rank, start, end, secs)
            if not _first_per_device(seen, (run_id, epoch, dev), rank, start, end, acc["flags"]):
                continue
            acc["gpu" if dev_kind == "gpu" else "cpu"].append(e)
            if dev_kind == "gpu":
                acc["active"].append(active)
            acc["u"] += u or 0.0
    for run_id, flags in conn.execute(  # steps' and epochs' flags too: a late or gappy step
        select(Interval.run_id, Interval.flags)
        .where(Interval.run_id.in_(list(out)), Interval.flags != "").distinct()
    ):  # fmt: skip
        out[run_id]["flags"] |= _flags([flags])
    return out


def _first_per_device(seen: dict, key: tuple, rank: int, start: int, end: int,
                      flags: set[str]) -> bool:  # fmt: skip
    """False for an interval of a device at `key` (run, epoch or step, device) that overlaps in
    time another rank's interval of that device already counted (rows in rank order), and the
    flags then say `shared_device`; True otherwise, and it is counted. Ranks that share one GPU
    (MIG slices, or CUDA_VISIBLE_DEVICES / LOCAL_RANK alike by mistake) each measure the whole
    GPU: summed over ranks, the job's energy was that GPU's twice. The lowest rank's interval
    stands for the device. A run resumed with its ranks on other GPUs uses a device under two
    ranks at different times: both count."""
    counted = seen.setdefault(key, [])
    if shares_device(counted, rank, start, end):
        flags.add("shared_device")
        return False
    counted.append((rank, start, end))
    return True


def _final_metrics(conn: Connection, ids: list[str]) -> dict[str, dict[str, float]]:
    """The lowest rank's last EPOCH_END metrics, overlaid with its RUN_END metrics."""
    out: dict[str, dict[str, float]] = {}
    rows = conn.execute(
        select(Marker.run_id, Marker.rank, Marker.kind, Marker.metrics)
        .where(Marker.run_id.in_(ids), Marker.kind.in_(["epoch_end", "run_end"]))
        .order_by(Marker.run_id, Marker.rank.desc(), Marker.kind, Marker.epoch)
    )
    for run_id, _, _, metrics in rows:  # epoch_end sorts before run_end; rank 0 comes last
        out.setdefault(run_id, {}).update(
            {k: v for k, v in (metrics or {}).items() if v is not None}
        )
    return out


def _summary(r, energy, steps, epochs, last_seen, ranks, metrics, names) -> RunSummary:
    end_ns = r.end_ns
    lead = min(ranks, key=lambda rr: rr.rank, default=None)
    duration_s = ((end_ns or last_seen or r.start_ns) - r.start_ns) / 1e9
    duration_s -= _between_sessions_s(energy, lead)
    world = r.world_size or len(ranks) or 1
    gpu = cpu = active = None
    # no run or epoch interval written yet (steps may be): the energy is not known yet
    u, flags = 0.0, frozenset({"partial"})
    if energy is not None:
        gpu, cpu = _sum(energy["gpu"]), _sum(energy["cpu"]) if energy["cpu"] else None
        active, u = _sum(energy["active"]), energy["u"]
        # a rank's run still open, or a resumed run's new session under way
        partial = energy["partial"] or energy["gpu_ranks"] < world or r.status == "running"
        flags = frozenset(energy["flags"]) | ({"partial"} if partial else set())
    # node energy = GPUs + CPU + DRAM where measured: a CPU or DRAM interval stored without
    # energy makes it unknown (as a GPU's does), never GPU-only under the same name
    total = None if gpu is None or (energy["cpu"] and cpu is None) else gpu + (cpu or 0.0)
    # The measured device's name (on a CPU trainer the rank reports its CPU architecture, while
    # the energy is the daemon's devices'); the rank's own record where the device is unknown.
    hardware = names.get(lead.device_uuid) if lead is not None else None
    return RunSummary(
        run_id=r.run_id, model=r.model, dataset=r.dataset,
        hardware=hardware or r.device_name or (r.hardware or {}).get("device_name", ""),
        status=r.status, world_size=world,
        nodes=r.nodes or len({rr.hostname for rr in ranks}) or 1,
        global_batch_size=r.global_batch_size, local_batch_size=r.local_batch_size,
        accumulation_steps=r.accumulation_steps, epochs=epochs, steps=steps,
        samples=steps * r.global_batch_size, start_ns=r.start_ns, end_ns=end_ns,
        duration_s=duration_s, gpu_hours=duration_s * world / 3600.0, energy_j=total,
        gpu_energy_j=gpu, cpu_energy_j=cpu, active_energy_j=active, energy_uncertainty_j=u,
        final_metrics=metrics, tags={str(k): str(v) for k, v in (r.tags or {}).items()},
        flags=flags,
        start_temperature_c={rr.device_uuid: rr.start_temperature_c for rr in ranks
                             if rr.start_temperature_c is not None},
    )  # fmt: skip


def _between_sessions_s(energy: dict | None, lead) -> float:
    """Time a resumed run spent between its sessions (0 for a run of one session): inside its
    lowest rank's merged run interval, plus from that interval's end to a new session's start."""
    if energy is None or lead is None or energy.get("lead", (None,))[0] != lead.rank:
        return 0.0
    _, start, end, ran_s = energy["lead"]
    gaps_s = max(0.0, (end - start) / 1e9 - ran_s)
    return gaps_s + max(0, lead.start_ns - end) / 1e9


def run_summary(db: Db, run_id: str) -> RunSummary:
    found = run_summaries(db, run_ids=[run_id])
    if not found:
        raise UnknownRunError(f"no run {run_id!r} in the database")
    return found[0]


def epoch_summaries(db: Db, run_id: str) -> list[EpochSummary]:
    with _connect(db) as conn:
        intervals = conn.execute(
            select(Interval.epoch, Interval.start_ns, Interval.end_ns, Interval.energy_j,
                   Interval.active_energy_j, Interval.flags, Device.kind, Interval.device_id,
                   Interval.rank)
            .join(Device, Device.id == Interval.device_id)
            .where(Interval.run_id == run_id, Interval.kind == "epoch")
            .order_by(Interval.rank)
        ).all()  # fmt: skip
        markers = conn.execute(
            select(Marker.epoch, Marker.rank, Marker.kind, Marker.time_ns, Marker.metrics)
            .where(Marker.run_id == run_id, Marker.kind.in_(["epoch_start", "epoch_end"]))
            .order_by(Marker.rank.desc())
        ).all()  # fmt: skip
        steps = dict(conn.execute(
            select(Marker.epoch, func.count(distinct(Marker.step)))
            .where(Marker.run_id == run_id, Marker.kind == "step_end").group_by(Marker.epoch)
        ).all())  # fmt: skip
        world = _world_size(conn, run_id)
    bounds: dict[int, dict] = defaultdict(dict)
    for epoch, _, kind, t, metrics in markers:  # the lowest rank's values win (come last)
        bounds[epoch][kind] = t
        if kind == "epoch_end":
            bounds[epoch]["metrics"] = {k: v for k, v in (metrics or {}).items() if v is not None}
    by_epoch: dict[int, list] = defaultdict(list)
    for row in intervals:
        by_epoch[row.epoch].append(row)
    out = []
    for epoch in sorted(set(by_epoch) | {e for e, b in bounds.items() if "epoch_end" in b}):
        rows, b = by_epoch.get(epoch, []), bounds.get(epoch, {})
        start = min((r.start_ns for r in rows), default=b.get("epoch_start", b.get("epoch_end")))
        end = max((r.end_ns for r in rows), default=b.get("epoch_end", start))
        duration_s = (end - start) / 1e9
        flags, seen = set(_flags(r.flags for r in rows)), {}
        once = [r for r in rows
                if _first_per_device(seen, (r.device_id,), r.rank, r.start_ns, r.end_ns, flags)]  # fmt: skip
        energy = _sum([r.energy_j for r in once])
        out.append(EpochSummary(
            run_id=run_id, epoch=epoch, start_ns=start, end_ns=end, duration_s=duration_s,
            steps=steps.get(epoch, 0), energy_j=energy,
            active_energy_j=_sum([r.active_energy_j for r in once if r.kind == "gpu"]),
            avg_power_w=energy / duration_s if energy is not None and duration_s > 0 else None,
            metrics=b.get("metrics", {}),
            flags=frozenset(flags) | _partial(rows, world),
        ))  # fmt: skip
    return out


def _world_size(conn: Connection, run_id: str) -> int:
    return conn.scalar(select(Run.world_size).where(Run.run_id == run_id)) or 1


def _partial(rows, world: int) -> frozenset[str]:
    """ "partial" while fewer ranks' GPU intervals are stored than the run has ranks: with
    several collectors (one per group of nodes) the others' may still be on their way."""
    gpus = sum(1 for r in rows if r.kind == "gpu")
    return frozenset({"partial"}) if gpus < world else frozenset()


def job_steps(db: Db, run_id: str) -> list[JobStep]:
    with _connect(db) as conn:
        world = _world_size(conn, run_id)
        if _shared_step_devices(conn, run_id):
            return _job_steps_once_per_device(conn, run_id, world)
        rows = conn.execute(
            select(Interval.step, func.max(Interval.epoch), func.min(Interval.start_ns),
                   func.max(Interval.end_ns), func.count(), func.sum(Interval.energy_j),
                   func.count(Interval.energy_j), func.sum(Interval.uncertainty_j),
                   func.sum(Interval.active_energy_j), func.count(Interval.active_energy_j),
                   func.min(Interval.coverage))
            .where(Interval.run_id == run_id, Interval.kind == "step")
            .group_by(Interval.step).order_by(Interval.step)
        ).all()  # fmt: skip
        flagged = defaultdict(set)
        for step, flags in conn.execute(
            select(Interval.step, Interval.flags).where(
                Interval.run_id == run_id, Interval.kind == "step", Interval.flags != ""
            )
        ):
            flagged[step] |= _flags([flags])
    return [
        JobStep(
            step,
            epoch,
            start,
            end,
            (end - start) / 1e9,
            n,
            e if n_e == n else None,  # one rank's unknown: the sum is not the step's energy
            u or 0.0,
            frozenset(flagged.get(step, ())) | ({"partial"} if n < world else frozenset()),
            active if n_a == n else None,
            coverage,
        )
        for step, epoch, start, end, n, e, n_e, u, active, n_a, coverage in rows
    ]


def _shared_step_devices(conn: Connection, run_id: str) -> set[int]:
    """Devices whose step intervals more than one rank of the run has (_first_per_device)."""
    return set(conn.scalars(
        select(Interval.device_id)
        .where(Interval.run_id == run_id, Interval.kind == "step")
        .group_by(Interval.device_id).having(func.count(distinct(Interval.rank)) > 1)
    ))  # fmt: skip


def _job_steps_once_per_device(conn: Connection, run_id: str, world: int) -> list[JobStep]:
    """job_steps where ranks share a device: summed in Python, each device once per step (the
    lowest rank's interval), flagged shared_device. Only such runs pay for it."""
    rows = conn.execute(
        select(Interval.step, Interval.epoch, Interval.start_ns, Interval.end_ns, Interval.rank,
               Interval.device_id, Interval.energy_j, Interval.uncertainty_j,
               Interval.active_energy_j, Interval.coverage, Interval.flags)
        .where(Interval.run_id == run_id, Interval.kind == "step")
        .order_by(Interval.step, Interval.rank)
    ).all()  # fmt: skip
    by_step: dict[int, list] = defaultdict(list)
    for row in rows:
        by_step[row.step].append(row)
    out = []
    for step, group in by_step.items():
        flags, seen = set(_flags(r.flags for r in group)), {}
        once = [r for r in group
                if _first_per_device(seen, (r.device_id,), r.rank, r.start_ns, r.end_ns, flags)]  # fmt: skip
        start, end = min(r.start_ns for r in group), max(r.end_ns for r in group)
        if len(group) < world:
            flags.add("partial")
        out.append(JobStep(
            step, max(r.epoch for r in group), start, end, (end - start) / 1e9, len(group),
            _sum([r.energy_j for r in once]), sum(r.uncertainty_j or 0.0 for r in once),
            frozenset(flags), _sum([r.active_energy_j for r in once]),
            min(r.coverage for r in group),
        ))  # fmt: skip
    return out


def rank_steps(db: Db, run_id: str, rank: int | None = None) -> list[RankStep]:
    query = (
        select(Interval.rank, Interval.step, Interval.epoch, Interval.start_ns, Interval.end_ns,
               Interval.duration_s, Interval.energy_j, Interval.active_energy_j,
               Interval.uncertainty_j, Interval.coverage, Interval.flags, Device.uuid)
        .join(Device, Device.id == Interval.device_id)
        .where(Interval.run_id == run_id, Interval.kind == "step")
        .order_by(Interval.step, Interval.rank)
    )  # fmt: skip
    if rank is not None:
        query = query.where(Interval.rank == rank)
    with _connect(db) as conn:
        rows = conn.execute(query).all()
    shared = _shared_rows(rows)
    return [
        RankStep(*row[:10], _flags([row[10]]) | _shared_flag(i in shared), row[11])
        for i, row in enumerate(rows)
    ]


def _shared_rows(rows) -> set[int]:
    """Indexes of the rank steps whose device another rank's step of the same number used at
    the same time (rows: rank, step, epoch, start_ns, end_ns, ..., device uuid last)."""
    by_key: dict[tuple, list[tuple[int, tuple[int, int, int]]]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_key[(row[1], row[11])].append((i, (row[0], row[3], row[4])))
    shared: set[int] = set()
    for group in by_key.values():
        if len(group) > 1:
            spans = [span for _, span in group]
            shared |= {i for i, span in group if shares_device(spans, *span)}
    return shared


def _shared_flag(shared: bool) -> frozenset[str]:
    """A rank's own step on a GPU another rank of the run used at the same time: its energy is
    the whole GPU's, theirs included (the job's sums count it once: _first_per_device)."""
    return frozenset({"shared_device"}) if shared else frozenset()


def step_energies(db: Db, run_id: str) -> list[float]:
    """Job-level energy (J) per optimizer step, in step order; steps without energy left out."""
    return [s.energy_j for s in job_steps(db, run_id) if s.energy_j is not None]


def step_stats(db: Db, run_id: str) -> list[EpochStepStats]:
    """Per epoch: the job's mean energy per step with its 95 % confidence interval."""
    return epoch_step_stats(job_steps(db, run_id))
