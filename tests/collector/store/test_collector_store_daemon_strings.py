"""What a daemon says of itself (NodeInfo, DeviceInfo) is stored whatever it says: strings the
columns cannot hold (too long, control characters: PostgreSQL refuses a NUL) are cleaned on
decoding, names keep apart by a digest, and the daemon's readings are not lost for it."""

from __future__ import annotations

from sqlalchemy import select

from collector.store.db import create_db_engine, migrate
from collector.store.models import Boot, Device, Node
from collector.store.store import Store, WriteBatch
from parawatt_proto import limits as L
from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.convert import node_rec
from tests.collector.conftest import db_url, pg_cluster, pg_url  # noqa: F401


def test_hostile_node_and_device_strings_are_stored_cleaned(db_url):  # noqa: F811
    long_uuid = "GPU-" + "a" * 400
    info = pb.NodeInfo(
        hostname="h" * 300 + "\x00", boot_id="b1", backend="sim\x00\x1b[31m",
        driver_version="9" * 100, daemon_version="v\u202e" * 40,
        devices=[
            pb.DeviceInfo(index=0, uuid=long_uuid + "x", name="H100\x00" * 100,
                          sensor_method="m" * 1000),
            pb.DeviceInfo(index=1, uuid=long_uuid + "y", name="H100"),
            pb.DeviceInfo(index=2, uuid="GPU-ok", name="A100"),
        ],
    )  # fmt: skip
    node = node_rec(info)
    engine = create_db_engine(db_url)
    migrate(engine)
    batch = WriteBatch()
    batch.nodes[node.boot_id] = node
    Store(engine).write(batch)
    with engine.connect() as conn:
        (host,) = conn.scalars(select(Node.hostname)).all()
        boot = conn.execute(select(Boot)).one()
        devices = {d.uuid: d for d in conn.execute(select(Device)).all()}
    engine.dispose()
    assert len(host) == L.HOSTNAME_MAX and host.startswith("h" * 200)
    assert (boot.backend, boot.driver_version) == ("sim??[31m", "9" * L.VERSION_MAX)
    assert len(boot.daemon_version) == L.VERSION_MAX and "\u202e" not in boot.daemon_version
    assert len(devices) == 3 and "GPU-ok" in devices  # the two long uuids stay two
    long_ones = [d for u, d in devices.items() if u != "GPU-ok"]
    assert all(len(d.uuid) == L.DEVICE_UUID_MAX for d in long_ones)
    assert {d.name[:5] for d in long_ones} == {"H100?", "H100"}
    assert max(len(d.sensor_method) for d in long_ones) == L.SENSOR_METHOD_MAX
    # the same uuid maps to the same name every time (readings find their device)
    assert node_rec(info).devices[0].uuid == node.devices[0].uuid
