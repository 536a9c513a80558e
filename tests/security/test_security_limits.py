"""One set of limits end to end: the daemon, the trainer's flags and the SQL columns agree."""

from __future__ import annotations

import time

import grpc
import pytest
from sqlalchemy import inspect, select

from collector.config import CollectorConfig
from collector.service import create_collector
from collector.store.db import create_db_engine, migrate
from collector.store.models import Boot, Device, Interval, Marker, Node, Run, RunRank, StreamGap
from parawatt_proto import limits as L
from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.validate import marker_problem
from tests.collector.conftest import db_url, pg_cluster, pg_url  # noqa: F401
from tests.daemon.daemon_helpers import daemon_stub
from trainer.config import parse_run_id, parse_tag

COLUMNS = [
    (Run, "run_id", L.RUN_ID_MAX), (RunRank, "run_id", L.RUN_ID_MAX),
    (Marker, "run_id", L.RUN_ID_MAX), (Interval, "run_id", L.RUN_ID_MAX),
    (Node, "hostname", L.HOSTNAME_MAX), (RunRank, "hostname", L.HOSTNAME_MAX),
    (Marker, "hostname", L.HOSTNAME_MAX), (Device, "uuid", L.DEVICE_UUID_MAX),
    (RunRank, "device_uuid", L.DEVICE_UUID_MAX), (Marker, "device_uuid", L.DEVICE_UUID_MAX),
    (Device, "name", L.DEVICE_NAME_MAX), (Run, "device_name", L.DEVICE_NAME_MAX),
    (Run, "model", L.MODEL_MAX), (Run, "dataset", L.DATASET_MAX),
    (Run, "run_token_sha256", L.RUN_TOKEN_SHA256_BYTES),
    (Boot, "boot_id", L.BOOT_ID_MAX), (StreamGap, "previous_boot", L.BOOT_ID_MAX),
    (Boot, "backend", L.VERSION_MAX), (Boot, "driver_version", L.VERSION_MAX),
    (Boot, "daemon_version", L.VERSION_MAX), (Device, "sensor_method", L.SENSOR_METHOD_MAX),
]  # fmt: skip


def test_sql_columns_are_sized_from_the_limits():
    for model, column, limit in COLUMNS:
        col = model.__table__.c[column]
        length = getattr(col.type, "length", None)
        if length is None:  # RunRank.run_id: a foreign key takes its type from run.run_id
            length = next(iter(col.foreign_keys)).column.type.length
        assert length == limit, f"{model.__tablename__}.{column}: {length} != {limit}"


def test_the_migrated_schema_has_the_same_sizes(db_url):  # noqa: F811
    engine = create_db_engine(db_url)
    migrate(engine)
    found = {}
    with engine.connect() as conn:
        insp = inspect(conn)
        for model, column, _ in COLUMNS:
            cols = {c["name"]: c["type"] for c in insp.get_columns(model.__tablename__)}
            found[(model.__tablename__, column)] = getattr(cols[column], "length", None)
    engine.dispose()
    for model, column, limit in COLUMNS:
        if column == "run_token_sha256":
            continue  # BLOB / BYTEA keep no length; the hash is 32 bytes by construction
        assert found[(model.__tablename__, column)] == limit, (model.__tablename__, column)


def test_the_trainer_and_the_daemon_accept_and_refuse_the_same_values():
    at, beyond = "r" * L.RUN_ID_MAX, "r" * (L.RUN_ID_MAX + 1)
    assert parse_run_id(at) == at
    assert marker_problem(pb.Marker(run_id=at, kind=pb.RUN_START, time_ns=1)) is None
    with pytest.raises(ValueError, match="longer than 128"):
        parse_run_id(beyond)
    assert "longer than 128" in marker_problem(pb.Marker(run_id=beyond, kind=1, time_ns=1))
    key, value = "k" * L.MAP_KEY_MAX, "v" * L.MAP_VALUE_MAX
    assert parse_tag(f"{key}={value}") == (key, value)
    config = pb.RunConfig(tags={key: value})
    assert marker_problem(pb.Marker(run_id="r", kind=1, time_ns=1, config=config)) is None
    for bad in (f"{key}k=v", f"k={value}v", "k=a\nb", "k\x1b=v"):
        with pytest.raises(ValueError):
            parse_tag(bad)
        k, _, v = bad.partition("=")
        config = pb.RunConfig(tags={k: v})
        assert marker_problem(pb.Marker(run_id="r", kind=1, time_ns=1, config=config))


def count_markers(engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(Marker.id)).all())


def test_values_at_every_limit_are_stored_whole(start_sim_daemon, db_url, tmp_path):  # noqa: F811
    """What the daemon accepts the database stores: nothing refused, nothing cut."""
    run_id = "r" * L.RUN_ID_MAX
    host = "h" * L.HOSTNAME_MAX
    d = start_sim_daemon(hostname="node-limits")
    config = pb.RunConfig(
        world_size=L.WORLD_SIZE_MAX, model="m" * L.MODEL_MAX, dataset="d" * L.DATASET_MAX,
        device_name="n" * L.DEVICE_NAME_MAX, global_batch_size=L.BATCH_SIZE_MAX,
        tags={f"{i:0{L.MAP_KEY_MAX}d}": "v" * L.MAP_VALUE_MAX for i in range(L.MAP_ENTRIES_MAX)},
    )  # fmt: skip
    uuid = d.uuids[0]
    t = time.time_ns()
    markers = [
        pb.Marker(run_id=run_id, kind=pb.RUN_START, time_ns=t, hostname=host, config=config,
                  rank=L.WORLD_SIZE_MAX - 1, device_uuid=uuid),
        pb.Marker(run_id=run_id, kind=pb.STEP_START, time_ns=t + 1, hostname=host,
                  rank=L.WORLD_SIZE_MAX - 1, step=L.STEP_MAX, device_uuid=uuid,
                  metrics={"m" * L.METRIC_NAME_MAX: 1.0}),
    ]  # fmt: skip
    cfg = CollectorConfig(daemons=(d.address,), db_url=db_url, metrics_listen=None,
                          flush_interval_s=0.05)  # fmt: skip
    with create_collector(cfg) as c, daemon_stub(d.address) as stub:
        try:
            assert stub.SendMarkers(pb.MarkerBatch(markers=markers), timeout=5).accepted == 2
        except grpc.RpcError as exc:
            pytest.fail(exc.details())
        deadline = time.monotonic() + 60  # the stream delivers them a moment later
        while time.monotonic() < deadline and count_markers(c.engine) < 2:
            time.sleep(0.05)
        assert c.flush(30)
        assert c.live.rows_refused_total == 0
        with c.engine.connect() as conn:
            run = conn.execute(select(Run.run_id, Run.model, Run.dataset, Run.tags)).one()
            stored = conn.execute(select(Marker.run_id, Marker.hostname, Marker.step)).all()
    assert run.run_id == run_id and len(run.model) == L.MODEL_MAX
    assert len(run.dataset) == L.DATASET_MAX and len(run.tags) == L.MAP_ENTRIES_MAX
    assert {(r, len(h)) for r, h, _ in stored} == {(run_id, L.HOSTNAME_MAX)}
    assert max(s for _, _, s in stored) == L.STEP_MAX
