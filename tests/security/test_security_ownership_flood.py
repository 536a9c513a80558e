"""Run ownership under a flood of made-up runs: the daemon's run table is bounded, and a run it
forgets must stay its owner's (parawatt_proto.ownership).

The review's attack (g5_evict.py): a victim run starts, 66,000 RUN_STARTs of other runs push it
out of the daemon's table, a stranger's RUN_END FAILED then owned it, and the owner's own
EPOCH_END and RUN_END were refused.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.ownership import MISMATCH, ForgottenRuns, RunLedger, RunOwner
from tests.daemon.daemon_helpers import daemon_stub
from tests.support.markers import read_markers

OWNER, STRANGER = (hashlib.sha256(secrets.token_bytes(32)).digest() for _ in range(2))


def flood(ledger: RunLedger, n: int, prefix: str = "flood") -> None:
    for i in range(n):
        sha = hashlib.sha256(f"{prefix}{i}".encode()).digest()
        assert ledger.admit(f"{prefix}{i}", 0, pb.RUN_START, sha) is None


def test_a_flood_cannot_hand_a_forgotten_run_to_a_stranger():
    ledger = RunLedger(max_runs=64, forgotten_entries=256)
    assert ledger.admit("victim", 0, pb.RUN_START, OWNER) is None
    flood(ledger, 1000)  # far past the table: the victim and most of the flood are forgotten
    assert "victim" not in ledger
    refusal = ledger.admit("victim", 0, pb.RUN_END, STRANGER)
    assert refusal is not None and refusal.reason == MISMATCH and refusal.first
    assert ledger.admit("victim", 0, pb.RUN_END, STRANGER).first is False  # logged once
    # Its owner carries on: the run comes back, and ends as before.
    assert ledger.admit("victim", 0, pb.EPOCH_END, OWNER) is None
    assert "victim" in ledger
    assert ledger.admit("victim", 0, pb.RUN_END, OWNER) is None
    assert ledger.admit("victim", 0, pb.RUN_END, STRANGER).reason == MISMATCH
    # Flood runs forgotten after their bucket filled were not recorded: left to the collector.
    assert len(ledger) <= 64 and ledger.unjudged_total > 0


def test_a_run_forgotten_finished_stays_finished_and_resumable_by_its_owner_only():
    ledger = RunLedger(max_runs=4, forgotten_entries=64)
    for kind in (pb.RUN_START, pb.RUN_END):
        assert ledger.admit("done", 0, kind, OWNER) is None
    flood(ledger, 10)
    assert ledger.admit("done", 0, pb.RUN_START, STRANGER).reason == MISMATCH
    assert ledger.admit("done", 0, pb.STEP_START, OWNER).reason == "the run has finished"
    assert ledger.admit("done", 0, pb.RUN_START, OWNER) is None  # resumed from a checkpoint
    assert ledger.admit("done", 0, pb.STEP_START, OWNER) is None


def test_a_run_forgotten_unfinished_keeps_every_rank_open():
    """Which ranks were open is lost with the run: rank 0 ending must not shut rank 1 out."""
    ledger = RunLedger(max_runs=4, forgotten_entries=64)
    for rank in (0, 1):
        assert ledger.admit("two-ranks", rank, pb.RUN_START, OWNER) is None
    flood(ledger, 10)
    assert ledger.admit("two-ranks", 0, pb.RUN_END, OWNER) is None
    assert ledger.admit("two-ranks", 1, pb.STEP_END, OWNER) is None
    assert ledger.admit("two-ranks", 1, pb.RUN_END, OWNER) is None


def test_the_record_is_fixed_size_and_what_it_cannot_hold_is_left_to_the_collector():
    """One bucket of four: a fifth forgotten run is not recorded, and no run of that bucket
    that the ledger does not hold can be judged any more; the four recorded ones still are."""
    record = ForgottenRuns(entries=4)
    size = len(record._table)
    for i in range(5):
        record.forget(f"r{i}", RunOwner(OWNER))
    assert len(record._table) == size == 64
    assert record.recall("r4", STRANGER) is False  # cannot be told: accept, do not remember
    assert record.recall("new", OWNER) is False
    assert record.recall("r0", STRANGER).reason == MISMATCH
    assert record.recall("r0", OWNER) == RunOwner(OWNER, ranks_unknown=True)
    assert record.recall("r0", STRANGER) is False  # back in the ledger now, not here

    ledger = RunLedger(max_runs=1, forgotten_entries=4)
    ledger._forgotten = record
    assert ledger.admit("r4", 0, pb.RUN_END, STRANGER) is None
    assert "r4" not in ledger and ledger.unjudged_total == 1
    assert ledger.admit("r1", 0, pb.RUN_END, STRANGER).reason == MISMATCH


def test_without_a_record_a_forgotten_run_is_owned_again_by_its_next_marker():
    """The collector's ledger (it reloads forgotten runs from its database): unchanged."""
    ledger = RunLedger(max_runs=2)
    assert ledger.admit("old", 0, pb.RUN_START, OWNER) is None
    flood(ledger, 3)
    assert ledger.admit("old", 0, pb.STEP_START, STRANGER) is None
    assert ledger.get("old").token_sha256 == STRANGER


def test_the_daemon_keeps_a_run_to_its_owner_through_a_flood_of_runs(start_sim_daemon):
    """g5_evict.py at a small scale: a table of 16 runs, 200 made-up runs after the victim."""
    d = start_sim_daemon(max_runs=16)
    owner_token, stranger_token = secrets.token_bytes(32), secrets.token_bytes(32)

    def mk(run_id: str, kind: int, token: bytes, **fields) -> pb.Marker:
        return pb.Marker(run_id=run_id, kind=kind, time_ns=time.time_ns(), run_token=token,
                         **fields)  # fmt: skip

    with daemon_stub(d.address) as stub:
        send = lambda *ms: stub.SendMarkers(pb.MarkerBatch(markers=ms), timeout=10)  # noqa: E731
        assert send(mk("victim", pb.RUN_START, owner_token), mk("victim", pb.EPOCH_START,
                                                                owner_token)).accepted == 2  # fmt: skip
        for b in range(0, 200, 100):
            batch = [mk(f"ev{b + i}", pb.RUN_START, secrets.token_bytes(32)) for i in range(100)]
            assert send(*batch).accepted == 100
        assert d.daemon.core.owners.evicted_total > 60  # the record holds 64
        failed = mk("victim", pb.RUN_END, stranger_token, status=pb.RUN_STATUS_FAILED)
        assert send(failed).rejected == 1
        assert send(mk("victim", pb.EPOCH_END, owner_token)).accepted == 1
        done = mk("victim", pb.RUN_END, owner_token, status=pb.RUN_STATUS_COMPLETED)
        assert send(done).accepted == 1
    stored = read_markers(d.address, "victim")
    assert [m.status for m in stored if m.kind == pb.RUN_END] == [pb.RUN_STATUS_COMPLETED]
    assert {m.run_token_sha256 for m in stored} == {hashlib.sha256(owner_token).digest()}
