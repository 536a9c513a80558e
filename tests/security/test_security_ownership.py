"""Run ownership: another process cannot change a run it did not start, nor a finished run.

Markers go over the daemon's real gRPC intake with tokens, as the parawatt client sends them;
the collector (the authority across nodes) reads two daemons into SQLite.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import urllib.request

import grpc
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.orm import Session

from collector.config import CollectorConfig
from collector.service import create_collector
from collector.store.db import create_db_engine, migrate
from collector.store.models import Marker, Run, RunRank
from collector.store.store import Store
from collector.store.writebatch import WriteBatch
from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto import parawatt_pb2_grpc as pb_grpc
from power_daemon.serve.metrics import DaemonMetrics
from tests.collector.conftest import db_url, pg_cluster, pg_url  # noqa: F401
from tests.collector.synth import T0, SynthDevice, marker, node
from tests.support.markers import read_markers

OWNER, INTRUDER = secrets.token_bytes(32), secrets.token_bytes(32)


class Rank:
    """One rank's marker sender: every marker carries its token."""

    def __init__(self, address: str, token: bytes = b"", rank: int = 0, run_id: str = "r1"):
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.PowerDaemonStub(self.channel)
        self.token, self.rank, self.run_id = token, rank, run_id

    def marker(self, kind: int, step: int = 0, **fields) -> pb.Marker:
        epoch = 0 if kind in (pb.RUN_START, pb.RUN_END) else fields.pop("epoch", 0)
        return pb.Marker(run_id=self.run_id, rank=self.rank, local_rank=self.rank % 2, kind=kind,
                         step=step, epoch=epoch, time_ns=time.time_ns(), run_token=self.token,
                         **fields)  # fmt: skip

    def send(self, *markers: pb.Marker) -> pb.MarkerAck:
        return self.stub.SendMarkers(pb.MarkerBatch(markers=markers), timeout=5)

    def start(self) -> pb.MarkerAck:
        return self.send(self.marker(pb.RUN_START, config=pb.RunConfig(world_size=2, model="m")))

    def end(self) -> pb.MarkerAck:
        return self.send(self.marker(pb.RUN_END, status=pb.RUN_STATUS_COMPLETED))

    def close(self) -> None:
        self.channel.close()


def test_the_daemon_refuses_other_owners_and_finished_runs(sim_daemon, caplog):
    caplog.set_level(logging.WARNING, "power_daemon")
    owner = Rank(sim_daemon.address, OWNER)
    owner1 = Rank(sim_daemon.address, OWNER, rank=1)
    intruder = Rank(sim_daemon.address, INTRUDER, rank=1)
    anonymous = Rank(sim_daemon.address, b"", rank=1)
    assert owner.start().accepted == 1 and owner1.start().accepted == 1
    # Another token, or none, for a run that has one: refused, the owner's part of the batch kept.
    ack = owner.send(owner.marker(pb.STEP_START, 1), intruder.marker(pb.STEP_START, 9))
    assert (ack.accepted, ack.rejected) == (1, 1)
    assert anonymous.send(anonymous.marker(pb.STEP_START, 9)).rejected == 1
    assert intruder.send(intruder.marker(pb.RUN_END, status=pb.RUN_STATUS_FAILED)).rejected == 1
    # The run ends once every rank that started has ended; the last rank may end later.
    assert owner.end().accepted == 1
    assert owner1.send(owner1.marker(pb.STEP_END, 1)).accepted == 1  # rank 1 is still open
    assert owner1.end().accepted == 1
    # Finished: even the owner's markers are refused, except RUN_START (a resumed run).
    assert owner.send(owner.marker(pb.STEP_START, 2)).rejected == 1
    assert intruder.start().rejected == 1
    assert owner.start().accepted == 1
    stored = read_markers(sim_daemon.address, "r1")
    assert {m.step for m in stored} == {0, 1}  # no step 9 or 2
    # The secret never leaves the node: only its hash is buffered and streamed.
    assert all(m.run_token == b"" for m in stored)
    assert {m.run_token_sha256 for m in stored} == {hashlib.sha256(OWNER).digest()}
    refused = [r for r in caplog.records if "refused markers of run" in r.getMessage()]
    assert len(refused) == 1 and "'r1'" in refused[0].getMessage()  # once per run
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonMetrics(sim_daemon.daemon.core))
    host = sim_daemon.daemon.core.hostname
    assert registry.get_sample_value("parawatt_daemon_markers_refused_total", {"node": host}) == 5
    for r in (owner, owner1, intruder, anonymous):
        r.close()


def test_runs_without_a_token_still_work_and_can_be_required(start_sim_daemon):
    d = start_sim_daemon()
    legacy = Rank(d.address, b"", run_id="old-client")
    assert legacy.start().accepted == 1
    assert legacy.send(legacy.marker(pb.STEP_START, 1)).accepted == 1
    # ... but a token for a run started without one is not its owner's.
    assert Rank(d.address, OWNER, run_id="old-client").start().rejected == 1
    strict = start_sim_daemon(require_run_token=True)
    with pytest.raises(grpc.RpcError) as err:
        Rank(strict.address, b"").start()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "--require-run-token" in err.value.details()
    assert Rank(strict.address, OWNER).start().accepted == 1
    with pytest.raises(grpc.RpcError, match="run_token of 4 bytes"):
        Rank(strict.address, b"weak").start()


def wait_for(condition, timeout_s: float = 60.0) -> bool:
    """Poll until condition() holds: the collector receives a stream, so what was sent shows
    up a moment later (wide margin: the machine is loaded)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def rows(engine, model, *where):
    with Session(engine) as session:
        return session.execute(select(model).where(*where)).scalars().all()


def refused_total(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    line = next(x for x in text.splitlines() if x.startswith("parawatt_markers_refused_total"))
    return float(line.split()[-1])


def test_the_collector_keeps_runs_to_their_owner_across_nodes(start_sim_daemon, tmp_path):
    """Node B's daemon never saw the run start, so it takes the intruder's markers; the
    collector, which holds the run's owner, refuses them and later ones for the finished run."""
    a = start_sim_daemon(hostname="node-a")
    b = start_sim_daemon(hostname="node-b")
    n3 = start_sim_daemon(hostname="node-c")
    config = CollectorConfig(daemons=(a.address, b.address, n3.address), db_url=f"sqlite:///{tmp_path}/c.db",
                             metrics_listen="127.0.0.1:0", flush_interval_s=0.05)  # fmt: skip
    with create_collector(config) as c:
        owner = Rank(a.address, OWNER)
        owner.start()
        owner.send(owner.marker(pb.STEP_START, 1), owner.marker(pb.STEP_END, 1))
        assert wait_for(lambda: len(rows(c.engine, Marker)) == 3), "the owner's markers"
        intruder = Rank(b.address, INTRUDER, rank=7)
        assert intruder.start().accepted == 1  # node B's daemon cannot know better
        intruder.send(intruder.marker(pb.STEP_START, 50), intruder.marker(pb.STEP_END, 50))
        intruder.send(intruder.marker(pb.RUN_END, status=pb.RUN_STATUS_FAILED))
        owner.end()
        assert wait_for(lambda: c.live.markers_refused_total == 4), c.live.markers_refused_total
        assert wait_for(lambda: rows(c.engine, Run)[0].end_ns is not None), "the owner's end"
        assert c.flush(30)
        (run,) = rows(c.engine, Run)
        assert run.run_token_sha256 == hashlib.sha256(OWNER).digest()
        assert (run.status, run.end_ns is not None) == ("completed", True)
        assert [r.rank for r in rows(c.engine, RunRank)] == [0]
        end_ns = run.end_ns
        # Node B's daemon now holds the intruder as the owner: it refuses the owner's token.
        assert Rank(b.address, OWNER, rank=3).start().rejected == 1
        # Finished: a later marker of the run, even with the owner's token from a third node
        # whose daemon takes it, changes nothing.
        late = Rank(n3.address, OWNER, rank=3)
        late.send(late.marker(pb.STEP_START, 99), late.marker(pb.RUN_END, status=2))
        assert wait_for(lambda: c.live.markers_refused_total == 6), c.live.markers_refused_total
        assert c.flush(30)
        (run,) = rows(c.engine, Run)
        assert (run.status, run.end_ns) == ("completed", end_ns)
        assert [r.rank for r in rows(c.engine, RunRank)] == [0]
        assert {m.step for m in rows(c.engine, Marker)} == {0, 1}
        assert refused_total(c.metrics_port) == 6
        for r in (owner, intruder, late):
            r.close()


def test_the_store_keeps_the_first_owner_whatever_reaches_it(db_url):  # noqa: F811
    """Another collector may have stored the run meanwhile: the store checks the owner in the
    transaction that writes, on SQLite and PostgreSQL."""
    engine = create_db_engine(db_url)
    migrate(engine)
    mine, theirs = hashlib.sha256(OWNER).digest(), hashlib.sha256(INTRUDER).digest()
    n = node("n1", [SynthDevice("gpu-0")])
    store = Store(engine)
    first = WriteBatch(nodes={n.boot_id: n})
    first.markers = [(n.boot_id, marker("run_start", T0, token_sha256=mine))]
    store.write(first)
    second = WriteBatch()
    second.markers = [
        (n.boot_id, marker("run_start", T0 + 1, rank=5, token_sha256=theirs)),
        (n.boot_id, marker("run_end", T0 + 2, rank=0, status="failed", token_sha256=theirs)),
        (n.boot_id, marker("step_start", T0 + 3, step=1, token_sha256=mine)),
    ]
    store.write(second)
    (run,) = rows(engine, Run)
    assert (run.run_token_sha256, run.status, run.end_ns) == (mine, "running", None)
    assert [r.rank for r in rows(engine, RunRank)] == [0]
    assert sorted(m.kind for m in rows(engine, Marker)) == ["run_start", "step_start"]
    assert store.take_refused() == 2
    engine.dispose()
