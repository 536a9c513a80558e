"""The SQL adapter's read side for a restart: cursors, devices and the open join state.

After a restart the join is rebuilt from the database alone: the markers whose intervals are not
stored yet (for the ranks whose run interval is missing) and the raw readings from before the
oldest of them, replayed through the same pure code, so no interval goes missing and none
duplicates (and a duplicate would hit the unique key anyway).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from sqlalchemy import Engine, case, exists, func, select
from sqlalchemy.orm import Session

from collector.records import IdleBucket as IdleBucketRec
from collector.store.db import translate_errors
from collector.store.models import (
    Boot,
    Device,
    IdleBucket,
    IngestCursor,
    Interval,
    Marker,
    Node,
    Reading,
    Reading1s,
    Run,
    RunRank,
)
from parawatt_proto.ownership import RunOwner
from parawatt_proto.records import DeviceRec, MarkerRec, NodeRec, ReadingRec

_INTERVAL_KIND = case(
    (Marker.kind.like("run_%"), "run"), (Marker.kind.like("epoch_%"), "epoch"), else_="step"
)


def cursor_for(engine: Engine, address: str) -> tuple[str, int] | None:
    """(boot_id, next_seq) last stored for the daemon at this address."""
    with translate_errors("reading ingest cursors", engine), engine.connect() as conn:
        row = conn.execute(
            select(Boot.boot_id, IngestCursor.next_seq)
            .join(Boot, Boot.id == IngestCursor.boot_id)
            .where(IngestCursor.address == address)
            .order_by(IngestCursor.updated_ns.desc())
            .limit(1)
        ).first()
    return (row[0], row[1]) if row else None


def hostnames_of(engine: Engine, addresses: list[str]) -> list[str]:
    """The nodes these daemon addresses have served (by their stored ingest cursors)."""
    if not addresses:
        return []
    with translate_errors("reading ingest cursors", engine), engine.connect() as conn:
        rows = conn.execute(
            select(Node.hostname)
            .join(Boot, Boot.node_id == Node.id)
            .join(IngestCursor, IngestCursor.boot_id == Boot.id)
            .where(IngestCursor.address.in_(addresses))
            .distinct()
        )
        return sorted(h for (h,) in rows)


def nodes(engine: Engine, hostnames: list[str] | None = None) -> list[NodeRec]:
    """Every node (or these) with every device it ever had (device index meaningless: -1)."""
    query = select(Node.hostname, Device).join(Device, Device.node_id == Node.id)
    if hostnames is not None:
        query = query.where(Node.hostname.in_(hostnames))
    with translate_errors("reading devices", engine), Session(engine) as session:
        rows = session.execute(query)
        by_host: dict[str, list[DeviceRec]] = {}
        for hostname, d in rows:
            by_host.setdefault(hostname, []).append(
                DeviceRec(
                    index=-1,
                    uuid=d.uuid,
                    name=d.name,
                    kind=d.kind,
                    vendor_index=d.vendor_index,
                    power_limit_w=d.power_limit_w,
                    memory_total_bytes=d.memory_total_bytes,
                    has_energy_counter=d.has_energy_counter,
                    has_instant_power=d.has_instant_power,
                    counter_update_s=d.counter_update_s,
                    counter_resolution_j=d.counter_resolution_j,
                    power_avg_window_s=d.power_avg_window_s,
                    partial_coverage=bool(d.partial_coverage),
                    sensor_method=d.sensor_method or "",
                )
            )
    return [NodeRec(hostname=h, boot_id="", devices=tuple(ds)) for h, ds in by_host.items()]


def device_idle(engine: Engine, uuids: list[str] | None = None) -> list[tuple[str, float, int]]:
    """(uuid, idle power, when measured) of every device with one (of these devices only)."""
    query = select(Device.uuid, Device.idle_power_w, Device.idle_measured_ns).where(
        Device.idle_power_w.is_not(None)
    )
    if uuids is not None:
        query = query.where(Device.uuid.in_(uuids))
    with translate_errors("reading devices", engine), engine.connect() as conn:
        return [(u, w, t or 0) for u, w, t in conn.execute(query)]


def idle_history(
    engine: Engine, since_ns: int, uuids: list[str] | None = None
) -> dict[str, list[IdleBucketRec]]:
    """Per device uuid: its idle buckets from since_ns on (collector.join.idle's history), of
    these devices only when given."""
    query = (
        select(Device.uuid, IdleBucket.start_ns, IdleBucket.seconds, IdleBucket.low_w,
               IdleBucket.median_w)
        .join(Device, Device.id == IdleBucket.device_id)
        .where(IdleBucket.start_ns >= since_ns)
        .order_by(IdleBucket.start_ns)
    )  # fmt: skip
    if uuids is not None:
        query = query.where(Device.uuid.in_(uuids))
    out: dict[str, list[IdleBucketRec]] = {}
    with translate_errors("reading idle history", engine), engine.connect() as conn:
        for uuid, *rest in conn.execute(query):
            out.setdefault(uuid, []).append(IdleBucketRec(*rest))
    return out


def open_markers(
    engine: Engine, since_ns: int, hostnames: list[str] | None = None
) -> list[tuple[str | None, MarkerRec]]:
    """Markers of ranks whose run interval is missing, minus those whose interval is stored,
    each with the daemon boot it came in on (None where not known), in time order.

    "Stored" means an interval that reaches the marker's time: a resumed run's new session
    (its markers are the latest of their identity) is open although the earlier session's run
    interval, and steps it ran again, are stored."""
    run_done = exists().where(
        Interval.run_id == Marker.run_id,
        Interval.rank == Marker.rank,
        Interval.kind == "run",
        Interval.end_ns >= Marker.time_ns,
    )
    own_done = exists().where(
        Interval.run_id == Marker.run_id,
        Interval.rank == Marker.rank,
        Interval.kind == _INTERVAL_KIND,
        Interval.epoch == Marker.epoch,
        Interval.step == Marker.step,
        Interval.end_ns >= Marker.time_ns,
    )
    query = (
        select(Marker, Boot.boot_id)
        .outerjoin(Boot, Boot.id == Marker.boot_id)
        .where(Marker.time_ns >= since_ns, ~run_done, ~own_done)
        .order_by(Marker.time_ns)
    )
    if hostnames is not None:
        query = query.where(Marker.hostname.in_(hostnames))
    with translate_errors("reading open markers", engine), Session(engine) as session:
        return [
            (
                boot,
                MarkerRec(
                    run_id=m.run_id,
                    rank=m.rank,
                    kind=m.kind,
                    epoch=m.epoch,
                    step=m.step,
                    time_ns=m.time_ns,
                    device_uuid=m.device_uuid,
                    local_rank=m.local_rank,
                    hostname=m.hostname,
                    seq=m.seq,
                    metrics=dict(m.metrics or {}),
                    status=m.status,
                ),
            )
            for m, boot in session.execute(query)
        ]


def run_idle(engine: Engine, run_ids: set[str]) -> list[tuple[str, int, str, float, int]]:
    """(run_id, rank, device uuid, idle W, start of the rank's current session)."""
    if not run_ids:
        return []
    cols = (RunRank.run_id, RunRank.rank, RunRank.device_uuid, RunRank.idle_power_w,
            RunRank.start_ns)  # fmt: skip
    with translate_errors("reading runs", engine), engine.connect() as conn:
        rows = conn.execute(
            select(*cols).where(RunRank.run_id.in_(run_ids), RunRank.idle_power_w.is_not(None))
        )
        return [tuple(r) for r in rows]


def aggregated_until(engine: Engine) -> dict[str, int]:
    """Per device uuid: the last second whose aggregate is stored."""
    with translate_errors("reading aggregates", engine), engine.connect() as conn:
        rows = conn.execute(
            select(Device.uuid, func.max(Reading1s.second))
            .join(Reading1s, Reading1s.device_id == Device.id)
            .group_by(Device.uuid)
        )
        return {u: s for u, s in rows}


REPLAY_LEAD_NS = 60_000_000_000
_STRAYS_SKIPPED = 16  # readings stamped past since_ns that the stream fell back from, at most


def replay_boots(
    engine: Engine, since_ns: int, hostnames: list[str] | None = None
) -> list[tuple[int, str, str, int]]:
    """The daemon boots with raw readings stamped at or after since_ns (of these nodes), in the
    order the collector first saw them: (boot pk, boot_id, hostname, the seq its replay starts
    at). A replay reads each from there in its stream's order (boot_readings).

    The start is where the stream crossed since_ns (after a clock step back, the first time):
    the lowest seq stamped at or after it, from the readings stamped in the minute before it
    on, whose next readings are mostly stamped past it too. A reading stamped ahead of its time
    (a clock that jumped and came back, a hostile daemon; the live join set it aside) has the
    stream fall back behind since_ns after it; starting there, the replay would read the
    readings after it again (the whole boot, for one stamped days ahead)."""
    boots = select(Boot.id, Boot.boot_id, Node.hostname).join(Node, Node.id == Boot.node_id)
    if hostnames is not None:
        boots = boots.where(Node.hostname.in_(hostnames))
    # over the time index: grouped by the primary key's first column, SQLite would walk that
    # index instead, through every stored reading (days of them), so the grouping is by an
    # expression no index gives
    boot = (Reading.boot_id + 0).label("boot")
    lowest = func.min(Reading.seq)
    every = select(boot, lowest).where(Reading.time_ns >= since_ns).group_by(boot)
    before = (
        select(boot, lowest)
        .where(Reading.time_ns >= since_ns - REPLAY_LEAD_NS, Reading.time_ns < since_ns)
        .group_by(boot)
    )
    with translate_errors("reading raw readings", engine), engine.connect() as conn:
        known = {pk: (b, host) for pk, b, host in conn.execute(boots)}
        first = {pk: seq for pk, seq in conn.execute(every) if pk in known}
        lead = dict(conn.execute(before).all())
        out = []
        for pk in sorted(first):
            seq = _crossing(conn, pk, lead.get(pk, first[pk]), since_ns)
            if seq is not None:
                out.append((pk, *known[pk], seq))
        return out


def _crossing(conn, boot_pk: int, from_seq: int, since_ns: int) -> int | None:
    """replay_boots' start for one boot: along the primary key (time_ns + 0: not along the
    time index, which would read every boot's readings since since_ns)."""
    seq = None
    for _ in range(_STRAYS_SKIPPED):
        seq = conn.scalar(
            select(func.min(Reading.seq)).where(
                Reading.boot_id == boot_pk, Reading.seq >= from_seq, Reading.time_ns + 0 >= since_ns
            )
        )
        if seq is None:
            return None
        after = conn.scalars(
            select(Reading.time_ns)
            .where(Reading.boot_id == boot_pk, Reading.seq > seq)
            .order_by(Reading.seq)
            .limit(8)
        ).all()
        if 2 * sum(t >= since_ns for t in after) >= len(after):
            return seq
        from_seq = seq + 1
    return seq


def stamps_before(engine: Engine, boot_pk: int, seq: int, rows: int = 64) -> dict[str, int]:
    """Per device, the stamp of its last reading among the `rows` of this boot before seq: what
    a replay starting at seq compares its first readings with."""
    query = (
        select(Device.uuid, Reading.time_ns)
        .join(Device, Device.id == Reading.device_id)
        .where(Reading.boot_id == boot_pk, Reading.seq < seq)
        .order_by(Reading.seq.desc())
        .limit(rows)
    )
    with translate_errors("reading raw readings", engine), engine.connect() as conn:
        out: dict[str, int] = {}
        for uuid, t in conn.execute(query):
            out.setdefault(uuid, t)
        return out


def boot_readings(
    engine: Engine, boot_pk: int, from_seq: int, stop_seq: int | None = None,
    chunk_rows: int = 50_000,
) -> Iterator[list[ReadingRec]]:  # fmt: skip
    """One daemon boot's stored raw readings from from_seq on (below stop_seq: a stream resuming
    there delivers those), in its stream's order, as chunks. That is the order the live join
    took them in: after a node's clock stepped back, time order would interleave the two
    clocks' readings, which the join tells apart only in stream order (join/order.py)."""
    # ReadingRec's fields that have a column, in its order; the rest (power_from_avg, last) is
    # not stored and reads back as its default
    cols = [getattr(Reading, f) for f in ReadingRec.__slots__ if f in Reading.__table__.columns]
    query = (  # a reading without its device row is left out (the writer commits it first)
        select(Device.uuid, *cols)
        .join(Device, Device.id == Reading.device_id)
        .where(Reading.boot_id == boot_pk, Reading.seq >= from_seq)
    )
    if stop_seq is not None:
        query = query.where(Reading.seq < stop_seq)
    query = query.order_by(Reading.seq).execution_options(yield_per=chunk_rows)
    with translate_errors("reading raw readings", engine), engine.connect() as conn:
        chunk: list[ReadingRec] = []
        for uuid, seq, *rest in conn.execute(query):
            chunk.append(ReadingRec(seq, uuid, *rest))
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def newest_reading_ns(engine: Engine) -> int | None:
    """The newest stored reading's stamp, but not past when a collector last stored a daemon's
    items (its own clock; ingest cursors) nor past now: one reading stamped days ahead (a
    broken clock, a hostile daemon; the live join set it aside) is no measure of how far the
    data goes. None without readings."""
    with translate_errors("reading", engine), engine.connect() as conn:
        newest = conn.scalar(select(func.max(Reading.time_ns)))
        received = conn.scalar(select(func.max(IngestCursor.updated_ns)))
    if newest is None:
        return None
    return min(newest, time.time_ns(), received if received is not None else newest)


def run_owners(engine: Engine, run_ids: set[str]) -> dict[str, RunOwner]:
    """What the database knows of these runs' ownership (runs it does not hold are left out)."""
    out: dict[str, RunOwner] = {}
    ids = sorted(run_ids)
    with translate_errors("reading run owners", engine), engine.connect() as conn:
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            for run_id, sha, end_ns in conn.execute(
                select(Run.run_id, Run.run_token_sha256, Run.end_ns).where(Run.run_id.in_(part))
            ):
                out[run_id] = RunOwner(bytes(sha or b""), ended=end_ns is not None)
            for run_id, rank in conn.execute(
                select(RunRank.run_id, RunRank.rank).where(
                    RunRank.run_id.in_(part), RunRank.end_ns.is_(None)
                )
            ):
                if run_id in out:
                    out[run_id].open_ranks.add(rank)
    return out
