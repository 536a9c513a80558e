"""User-supplied strings are logged escaped: no forged log lines from a run id.

The daemon refuses such ids outright; values that reach the collector some other way (an older
daemon, a row already in the database, a bug) are still logged escaped.
"""

from __future__ import annotations

import hashlib
import logging
import time

import grpc
import pytest

from collector.join.joiner import Joiner
from collector.metrics.state import LiveState
from collector.ownership import OwnershipGate
from collector.store.db import create_db_engine, migrate
from collector.store.store import Store
from collector.store.writebatch import WriteBatch
from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.ownership import RunOwner
from tests.collector.synth import T0, SynthDevice, marker, node
from tests.daemon.daemon_helpers import daemon_stub

EVIL = "evil\nERROR power_daemon: forged line\r\x1b[2K"
ESCAPED = "evil\\nERROR power_daemon: forged line\\r\\x1b[2K"


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def assert_escaped(caplog, expected: int = 1) -> None:
    found = [msg for msg in messages(caplog) if ESCAPED in msg]
    assert len(found) >= expected, messages(caplog)
    for msg in messages(caplog):  # nothing can start a line of its own or rewrite the terminal
        assert "\n" not in msg and "\r" not in msg and "\x1b" not in msg, msg


def test_the_daemon_refuses_and_logs_a_forged_run_id_escaped(sim_daemon, caplog):
    caplog.set_level(logging.INFO)
    evil = pb.Marker(run_id=EVIL, kind=pb.RUN_START, time_ns=time.time_ns())
    with daemon_stub(sim_daemon.address) as stub, pytest.raises(grpc.RpcError) as err:
        stub.SendMarkers(pb.MarkerBatch(markers=[evil]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "control character '\\n'" in err.value.details()
    assert_escaped(caplog, expected=0)
    assert any("refused a request" in msg for msg in messages(caplog))


def test_the_join_logs_an_unmeasured_device_escaped(caplog):
    caplog.set_level(logging.WARNING, "collector")
    j = Joiner()
    j.add_node(node(EVIL, [SynthDevice("gpu-0")]))
    j.add_markers(EVIL, [marker("run_start", T0, run_id=EVIL, device_uuid=EVIL, hostname=EVIL)])
    assert j.poll().unmeasured_markers == 1
    assert_escaped(caplog)


def test_the_ownership_gate_logs_a_refusal_escaped(caplog):
    caplog.set_level(logging.WARNING, "collector")
    owner = hashlib.sha256(b"owner" * 8).digest()
    gate = OwnershipGate(lambda ids: {EVIL: RunOwner(owner)} if EVIL in ids else {}, LiveState())
    kept = gate.filter([marker("step_start", T0, run_id=EVIL, hostname=EVIL, step=1)])
    assert kept == [] and gate.live.markers_refused_total == 1
    assert_escaped(caplog)


def test_the_store_logs_a_refusal_for_a_run_already_in_the_database_escaped(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "collector")
    engine = create_db_engine(f"sqlite:///{tmp_path / 'logs.db'}")
    migrate(engine)
    n = node("n1", [SynthDevice("gpu-0")])
    store = Store(engine)
    first = WriteBatch(nodes={n.boot_id: n})
    first.markers = [(n.boot_id, marker("run_start", T0, run_id=EVIL, token_sha256=b"a" * 32))]
    store.write(first)  # SQLite keeps what a validating daemon would have refused
    later = WriteBatch()
    later.markers = [(n.boot_id, marker("run_end", T0 + 1, run_id=EVIL, token_sha256=b"b" * 32))]
    store.write(later)
    assert store.take_refused() == 1
    assert_escaped(caplog)
    engine.dispose()
