"""The SQL adapter's write side: one transaction per WriteBatch, idempotent, in big batches.

Every insert is "on conflict do nothing" on the natural key, so a replayed reading, marker,
interval or aggregate never makes a second row; a marker or interval whose identity comes again
later (a run resumed from a checkpoint) replaces the earlier one if it is later (store_intervals).
Raw readings take a faster path of their own (store_readings: COPY on PostgreSQL, multi-row
statements on SQLite); run rows: store_runs.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from collector.records import as_dict
from collector.store.db import (
    UNKNOWN_FILE,
    file_identity,
    migrate,
    sqlite_file,
    translate_errors,
)
from collector.store.intervals import latest, write_intervals
from collector.store.models import (
    Boot,
    Device,
    IdleBucket,
    IngestCursor,
    Marker,
    Node,
    Reading,
    Reading1s,
    RunRank,
    StreamGap,
)
from collector.store.readings import insert_readings
from collector.store.runs import (
    RunStartUpserts,
    clean_metrics,
    finite,
    owned_markers,
    write_run_end,
    write_run_starts,
)
from collector.store.writebatch import WriteBatch
from parawatt_proto.ownership import MISMATCH
from parawatt_proto.records import MarkerRec, NodeRec

log = logging.getLogger(__name__)

_MARKER_KEY = ("run_id", "rank", "kind", "epoch", "step")


class Store:
    def __init__(self, engine: Engine, chunk_rows: int = 20_000) -> None:
        self.engine = engine
        self.chunk_rows = chunk_rows
        self._pg = engine.dialect.name == "postgresql"
        self._boot_pk: dict[str, int] = {}
        self._device_pk: dict[str, int] = {}
        self.refused_total = 0  # markers refused for run ownership (see owned_markers)
        self._refused_now = 0
        self._refused_runs: dict[str, None] = {}  # logged once each (bounded)
        self._marker_upsert = None
        self._run_upserts: RunStartUpserts | None = None
        # SQLite: the file the engine writes into, to notice it deleted or replaced (check_file)
        self._file = sqlite_file(engine)
        self._file_id: tuple[int, int] | None = None
        self._nodes: dict[str, NodeRec] = {}  # by boot: written again into a recreated file
        self._cursors_stored = True  # False after a reopen (reopen)

    def write(self, batch: WriteBatch) -> None:
        """Store the batch atomically; raises StoreError (and keeps nothing) on failure."""
        self._refused_now = 0
        with translate_errors("writing", self.engine), self.engine.begin() as conn:
            try:
                self._write(conn, batch)
            except BaseException:
                self._boot_pk.clear()  # pks learnt inside a rolled-back transaction are void
                self._device_pk.clear()
                raise
        self.refused_total += self._refused_now  # counted once committed

    def take_refused(self) -> int:
        """Markers refused for run ownership since the last call."""
        n, self.refused_total = self.refused_total, 0
        return n

    def _write(self, conn: Connection, b: WriteBatch) -> None:
        for node in b.nodes.values():
            self._upsert_node(conn, node)
            self._nodes[node.boot_id] = node
            if len(self._nodes) > 10_000:  # bounded: boots of long-gone daemons go first
                del self._nodes[next(iter(self._nodes))]
        for boot_id, rows in b.readings.items():
            self._insert_readings(conn, self._boot(conn, boot_id), rows)
        self._insert_markers(conn, b.markers)
        rows = [self._interval_row(conn, i) for i in b.intervals]
        if rows:
            write_intervals(conn, self._dialect_insert, rows, self.chunk_rows)
        for u in b.rank_updates:
            where = [RunRank.run_id == u.run_id, RunRank.rank == u.rank]
            if u.start_ns is not None:  # facts of the rank's current session only
                where.append(RunRank.start_ns == u.start_ns)
            conn.execute(
                update(RunRank)
                .where(*where)
                .values(  # the run's start temperature is its first session's
                    start_temperature_c=func.coalesce(
                        RunRank.start_temperature_c, u.start_temperature_c
                    ),
                    idle_power_w=u.idle_power_w,
                )
            )
        for u in b.idle_updates:
            if u.idle_power_w is not None:
                conn.execute(
                    update(Device)
                    .where(Device.uuid == u.device_uuid)
                    .values(idle_power_w=u.idle_power_w, idle_measured_ns=u.measured_ns)
                )
            if u.buckets:
                device_id = self._device(conn, u.device_uuid)
                self._insert(conn, IdleBucket, [{**as_dict(x), "device_id": device_id}
                                                for x in u.buckets])  # fmt: skip
        self._insert(conn, Reading1s, [self._aggregate_row(conn, a) for a in b.aggregates])
        gaps = [{**as_dict(g), "boot_id": self._boot(conn, g.boot_id)} for g in b.gaps]
        self._insert(conn, StreamGap, gaps)
        for boot_id, (address, next_seq, now_ns) in (
            b.cursors if self._cursors_stored else {}
        ).items():
            row = dict(
                boot_id=self._boot(conn, boot_id),
                address=address,
                next_seq=next_seq,
                updated_ns=now_ns,
            )
            stmt = self._dialect_insert(IngestCursor).values(row)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["boot_id"],
                    set_={
                        "next_seq": stmt.excluded.next_seq,
                        "address": stmt.excluded.address,
                        "updated_ns": stmt.excluded.updated_ns,
                    },
                )
            )

    # -- nodes, boots, devices -----------------------------------------------------------------
    def _upsert_node(self, conn: Connection, n: NodeRec) -> None:
        self._insert(conn, Node, [{"hostname": n.hostname}], chunked=False)
        node_pk = conn.scalar(select(Node.id).where(Node.hostname == n.hostname))
        boot = dict(
            boot_id=n.boot_id,
            node_id=node_pk,
            backend=n.backend,
            driver_version=n.driver_version,
            daemon_version=n.daemon_version,
            interval_ns=n.interval_ns,
            started_ns=n.started_ns,
        )
        self._insert(conn, Boot, [boot], chunked=False)
        rows = [
            dict(uuid=d.uuid, node_id=node_pk, kind=d.kind, name=d.name,
                 vendor_index=d.vendor_index, power_limit_w=d.power_limit_w,
                 memory_total_bytes=d.memory_total_bytes, has_energy_counter=d.has_energy_counter,
                 has_instant_power=d.has_instant_power, power_avg_window_s=d.power_avg_window_s,
                 counter_update_s=d.counter_update_s, counter_resolution_j=d.counter_resolution_j,
                 partial_coverage=d.partial_coverage, sensor_method=d.sensor_method)
            for d in n.devices
        ]  # fmt: skip
        if rows:
            stmt = self._dialect_insert(Device)
            keep = {"uuid", "idle_power_w", "idle_measured_ns"}
            set_ = {k: stmt.excluded[k] for k in rows[0] if k not in keep}
            conn.execute(stmt.on_conflict_do_update(index_elements=["uuid"], set_=set_), rows)

    def _boot(self, conn: Connection, boot_id: str) -> int:
        pk = self._boot_pk.get(boot_id)
        if pk is None:
            pk = conn.scalar(select(Boot.id).where(Boot.boot_id == boot_id))
            if pk is None:
                raise LookupError(f"boot {boot_id} written before its NodeInfo")
            self._boot_pk[boot_id] = pk
        return pk

    def _device(self, conn: Connection, uuid: str) -> int:
        pk = self._device_pk.get(uuid)
        if pk is None:
            for u, p in conn.execute(select(Device.uuid, Device.id)):
                self._device_pk[u] = p
            pk = self._device_pk[uuid]
        return pk

    # -- readings --------------------------------------------------------------------------------
    def _insert_readings(self, conn: Connection, boot_pk: int, blocks: list) -> None:
        for block in blocks:
            device_pk = [self._device(conn, uuid) for uuid in block.uuids]
            insert_readings(conn, boot_pk, device_pk, block, postgres=self._pg)

    # -- markers and runs --------------------------------------------------------------------
    def _insert_markers(
        self, conn: Connection, markers: list[tuple[str | None, MarkerRec]]
    ) -> None:
        if markers:
            markers, refused = owned_markers(conn, markers)
            self._refuse(refused)
        rows = []
        for boot_id, m in markers:
            rows.append(
                dict(
                    run_id=m.run_id,
                    rank=m.rank,
                    kind=m.kind,
                    epoch=m.epoch,
                    step=m.step,
                    time_ns=m.time_ns,
                    hostname=m.hostname,
                    device_uuid=m.device_uuid,
                    local_rank=m.local_rank,
                    boot_id=self._boot(conn, boot_id) if boot_id else None,
                    seq=m.seq,
                    status=m.status,
                    metrics=clean_metrics(m.metrics),
                )
            )
        rows = list(latest(rows, _MARKER_KEY, "time_ns").values())
        if rows:  # the same identity again later (a resumed run): the latest one is kept
            stmt = self._marker_upsert
            if stmt is None:  # built once: .excluded costs ~5 ms a statement
                stmt = self._dialect_insert(Marker)
                self._marker_upsert = stmt = stmt.on_conflict_do_update(
                    index_elements=list(_MARKER_KEY),
                    set_={c: stmt.excluded[c] for c in rows[0] if c not in _MARKER_KEY},
                    where=stmt.excluded.time_ns > Marker.time_ns,
                )
            for i in range(0, len(rows), self.chunk_rows):
                conn.execute(stmt, rows[i : i + self.chunk_rows])
        # Per run in time order: a resumed run's sessions may share a batch (e.g. after an
        # outage); runs in id order, so collectors sharing a database lock run rows in one order
        starts: list[MarkerRec] = []  # consecutive RUN_STARTs: one executemany (a flood)
        for m in sorted((m for _, m in markers if m.kind.startswith("run_")),
                        key=lambda m: (m.run_id, m.time_ns, m.kind == "run_end")):  # fmt: skip
            if m.kind == "run_start":
                starts.append(m)
                continue
            self._write_run_starts(conn, starts)
            write_run_end(conn, m)
        self._write_run_starts(conn, starts)

    def _write_run_starts(self, conn: Connection, starts: list[MarkerRec]) -> None:
        """Write and clear `starts` (in order, before any later RUN_END of theirs)."""
        if starts:
            if self._run_upserts is None:
                self._run_upserts = RunStartUpserts(self._dialect_insert)
            write_run_starts(conn, self._run_upserts, starts)
            starts.clear()

    def _refuse(self, refused: list[MarkerRec]) -> None:
        self._refused_now += len(refused)
        for m in refused:
            if m.run_id not in self._refused_runs:
                self._refused_runs[m.run_id] = None
                if len(self._refused_runs) > 10_000:
                    del self._refused_runs[next(iter(self._refused_runs))]
                log.warning("not storing markers of run %r: %s", m.run_id, MISMATCH)

    # -- helpers ---------------------------------------------------------------------------------
    def _interval_row(self, conn: Connection, i) -> dict[str, Any]:
        row = as_dict(i)
        row["device_id"] = self._device(conn, i.device_uuid)
        del row["device_uuid"]
        row["duration_s"] = i.duration_s
        row["flags"] = ",".join(sorted(i.flags))
        for k in (
            "energy_j",
            "active_energy_j",
            "power_integral_j",
            "uncertainty_j",
            "uncertainty_bound_j",
            "avg_power_w",
            "max_power_w",
        ):
            row[k] = finite(row[k])
        row["coverage"] = finite(row["coverage"]) or 0.0
        return row

    def _aggregate_row(self, conn: Connection, a) -> dict[str, Any]:
        row = as_dict(a)
        row["device_id"] = self._device(conn, a.device_uuid)
        del row["device_uuid"]
        return row

    def _dialect_insert(self, model):
        return (postgresql.insert if self._pg else sqlite.insert)(model)

    def _insert(self, conn: Connection, model, rows: list[dict], chunked: bool = True) -> None:
        if not rows:
            return
        stmt = self._dialect_insert(model).on_conflict_do_nothing()
        step = self.chunk_rows if chunked else len(rows)
        for i in range(0, len(rows), step):
            conn.execute(stmt, rows[i : i + step])

    # -- the SQLite file ---------------------------------------------------------------------
    def check_file(self) -> str | None:
        """What became of the SQLite file since the last check ("deleted", "replaced"), or
        None while it is the one the engine writes into (and always on PostgreSQL). The first
        call takes the file as it is then (after the migration created it)."""
        if self._file is None:
            return None
        now = file_identity(self._file)
        if now == UNKNOWN_FILE:  # a stat that failed for another reason (NFS): look again later
            return None
        if self._file_id is None or now == self._file_id:
            self._file_id = now
            return None
        return "deleted" if now is None else "replaced by another file"

    def describe(self) -> str:
        """The database, for a log line (the file on SQLite; no password on PostgreSQL)."""
        return str(self._file) if self._file else self.engine.url.render_as_string(True)

    def reopen(self) -> None:
        """Let go of the file the engine had open (deleted or replaced) and write at the path
        again: the database there, or a new one (schema migrated), with the nodes known so
        far written again (readings refer to their boots). Raises StoreError (retry later)."""
        self.engine.dispose()  # pooled connections still write into the old inode
        self._boot_pk.clear()
        self._device_pk.clear()
        if self._file is not None and file_identity(self._file) is None:
            for suffix in ("-wal", "-shm"):  # the deleted database's: never replayed into a new one
                self._file.with_name(self._file.name + suffix).unlink(missing_ok=True)
        migrate(self.engine)
        self._file_id = file_identity(self._file) if self._file is not None else None
        # The readings and markers of the seconds before went into the deleted file: a cursor
        # stored now, past them, would keep a restarted collector from reading them again from
        # the daemons' buffers. Until a restart, none is stored (a restart then reads each
        # daemon's whole buffer; what is there already is ignored).
        self._cursors_stored = False
        if self._nodes:
            self.write(WriteBatch(nodes=dict(self._nodes)))

    # -- maintenance -----------------------------------------------------------------------
    def trim_readings(self, before_ns: int) -> int:
        with translate_errors("trimming old readings", self.engine), self.engine.begin() as conn:
            conn.execute(delete(IdleBucket).where(IdleBucket.start_ns < before_ns))
            return conn.execute(delete(Reading).where(Reading.time_ns < before_ns)).rowcount
