"""Run ownership: who may send markers for a run (the rule daemon and collector both apply).

A run belongs to whoever started it. At RUN_START rank 0 makes a secret, `run_token`
(`secrets.token_bytes(32)`), and shares it with the other ranks (a broadcast in the process
group); every marker a rank sends carries it, to its node-local daemon only. The daemon keeps
nothing but its SHA-256: it fills `run_token_sha256` and clears `run_token` before it buffers or
streams the marker, so the secret never leaves the node.

The rule, applied by every daemon to what it is sent and by the collector to what it receives
(the collector is the authority across nodes; its run row keeps the hash of the first stored
RUN_START):

- the first marker of a run seen fixes its owner: the hash of its token (normally the
  RUN_START's; after a daemon restart, whatever marker of the run comes first);
- a later marker of the run whose hash differs is refused: another process, or a marker without
  a token for a run that has one (and one with a token for a run started without one);
- a run is *finished* once a RUN_END was seen and every rank that started has ended; after that,
  markers of the run are refused, except a RUN_START carrying the owner's token (a run resumed
  from a checkpoint, which keeps the token in it, opens again);
- a refused marker is counted and logged once per run, never stored.

Runs started without a token (older clients) keep working, with no protection: anyone who can
reach the daemon can send markers for them, as before. A daemon run with
`--require-run-token` refuses them.

State is bounded: at most `max_runs` runs (least recently used forgotten first, counted through
`on_evict`). The collector reloads a forgotten run from its database. A daemon has no database,
and "a forgotten run is owned again by its next marker" handed a run to whoever spoke first:
66,000 RUN_STARTs of made-up runs pushed a live run out of a daemon's table, a stranger's
RUN_END then owned it, and its owner's own markers were refused. So a daemon's ledger
(`forgotten_entries` > 0) keeps a compact record of the runs it forgot (`ForgottenRuns`): a fixed
table of 16-byte entries, a keyed 8-byte tag of the run id and a keyed tag of its owner's token
hash, in buckets of four chosen by the run id's keyed hash (the key is random per process, so
nobody can aim runs at one bucket). An entry is never overwritten, so a flood cannot wash a run
out of the record:

- a marker of a forgotten run with its owner's token brings the run back (finished or not:
  which of its ranks were open is lost, so a run forgotten unfinished is never taken as
  finished by the daemon again); any other token is refused, as if the run had never been
  forgotten;
- a run forgotten when its bucket was already full is not recorded; the bucket is marked, and a
  marker of a run unknown to the ledger whose bucket is marked cannot be judged: it is accepted
  and not remembered (counted in `unjudged_total`), and the collector, which holds every run's
  owner in its database, judges it alone. A flood can thus weaken the daemon's check to the
  collector's, never give a run to another owner nor lock its owner out.

Memory is 16 bytes an entry whatever comes in (the daemon: 4 entries per run of `max_runs`, at
most 2**20 entries, 16 MiB; 4 MiB by default).
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from parawatt_proto import limits
from parawatt_proto import parawatt_pb2 as pb

MISMATCH = "run_token does not match the run's owner"
FINISHED = "the run has finished"


def token_sha256(token: bytes) -> bytes:
    """The hash that travels in Marker.run_token_sha256 (empty for no token)."""
    return hashlib.sha256(token).digest() if token else b""


@dataclass(slots=True)
class RunOwner:
    token_sha256: bytes
    open_ranks: set[int] = field(default_factory=set)
    ended: bool = False  # a RUN_END was seen
    rejected: int = 0
    # Brought back after a daemon forgot it unfinished: which ranks are open is not known, so it
    # never counts as finished there (the collector, which knows, still applies that rule).
    ranks_unknown: bool = False

    @property
    def finished(self) -> bool:
        return self.ended and not self.open_ranks and not self.ranks_unknown


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    first: bool  # the run's first refused marker (log it; later ones are only counted)


class ForgottenRuns:
    """The runs a ledger forgot and who owned them, in fixed memory (see the module docstring).

    `entries` 16-byte entries in buckets of BUCKET: a keyed tag of the run id (8 bytes; all
    zeros: free), a keyed tag of the owner's token hash (7 bytes) and FLAGS (1 byte). A bucket
    that had no room for a run is marked in `_full` for good: its runs can no longer be told.
    """

    BUCKET = 4
    FINISHED, REFUSED = 1, 2  # FLAGS: the run had finished; a marker of it was refused already

    def __init__(self, entries: int) -> None:
        self.buckets = max(1, entries // self.BUCKET)
        self._key = secrets.token_bytes(16)  # per process: runs cannot be aimed at one bucket
        self._table = bytearray(16 * self.BUCKET * self.buckets)
        self._full = bytearray(self.buckets)

    def forget(self, run_id: str, owner: RunOwner) -> None:
        first, tag = self._place(run_id)
        at = self._find(first, tag)
        if at is None:
            at = self._find(first, bytes(8))  # a free entry
        if at is None:
            self._full[first // (16 * self.BUCKET)] = 1
            return
        flags = (self.FINISHED if owner.finished else 0) | (self.REFUSED if owner.rejected else 0)
        self._table[at : at + 16] = tag + self._owner_tag(owner.token_sha256) + bytes([flags])

    def recall(self, run_id: str, sha256: bytes) -> RunOwner | Refusal | bool:
        """A run the ledger does not hold: its owner, back (and no longer recorded here), when
        this is its owner's token; a Refusal for another token; True when the run was not
        forgotten (a new run), False when this cannot be told (its bucket overflowed)."""
        first, tag = self._place(run_id)
        at = self._find(first, tag)
        if at is None:
            return not self._full[first // (16 * self.BUCKET)]
        flags = self._table[at + 15]
        if self._table[at + 8 : at + 15] == self._owner_tag(sha256):
            self._table[at : at + 16] = bytes(16)
            if flags & self.FINISHED:
                return RunOwner(sha256, ended=True)
            return RunOwner(sha256, ranks_unknown=True)
        self._table[at + 15] = flags | self.REFUSED
        return Refusal(MISMATCH, not flags & self.REFUSED)

    def _place(self, run_id: str) -> tuple[int, bytes]:
        """(offset of the run's bucket, the run's tag; never all zeros)."""
        digest = hashlib.blake2b(
            run_id.encode("utf-8", "surrogatepass"), digest_size=16, key=self._key, person=b"run"
        ).digest()
        bucket = int.from_bytes(digest[:8], "big") % self.buckets
        tag = digest[8:] if any(digest[8:]) else b"\x01" * 8
        return 16 * self.BUCKET * bucket, tag

    def _owner_tag(self, sha256: bytes) -> bytes:
        return hashlib.blake2b(sha256, digest_size=7, key=self._key, person=b"owner").digest()

    def _find(self, first: int, tag: bytes) -> int | None:
        for at in range(first, first + 16 * self.BUCKET, 16):
            if self._table[at : at + 8] == tag:
                return at
        return None


class RunLedger:
    def __init__(
        self,
        max_runs: int = 65_536,
        on_evict: Callable[[str, RunOwner], None] | None = None,
        forgotten_entries: int = 0,
    ) -> None:
        self.max_runs = max_runs
        self._runs: OrderedDict[str, RunOwner] = OrderedDict()
        self._on_evict = on_evict
        # A daemon's record of the runs it forgot (0: none; the collector reloads them).
        self._forgotten = ForgottenRuns(forgotten_entries) if forgotten_entries > 0 else None
        self.rejected_total = 0
        self.evicted_total = 0
        self.unjudged_total = 0  # markers accepted without judgement (see ForgottenRuns)

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._runs

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: str) -> RunOwner | None:
        return self._runs.get(run_id)

    def seed(self, run_id: str, owner: RunOwner) -> None:
        """What a store already knows of a run (the collector, from its database)."""
        self._put(run_id, owner)

    def admit(self, run_id: str, rank: int, kind: int, sha256: bytes) -> Refusal | None:
        """Apply the rule to one marker: None (accepted, and remembered unless it cannot be
        judged: see ForgottenRuns) or why it is refused."""
        owner = self._runs.get(run_id)
        if owner is not None:
            self._runs.move_to_end(run_id)
        else:
            past = True if self._forgotten is None else self._forgotten.recall(run_id, sha256)
            if isinstance(past, Refusal):
                self.rejected_total += 1
                return past
            if past is False:
                self.unjudged_total += 1
                return None
            owner = past if isinstance(past, RunOwner) else RunOwner(sha256)
            self._put(run_id, owner)
        reason = None
        if sha256 != owner.token_sha256:
            reason = MISMATCH
        elif owner.finished and kind != pb.RUN_START:
            reason = FINISHED
        if reason:
            owner.rejected += 1
            self.rejected_total += 1
            return Refusal(reason, owner.rejected == 1)
        if kind == pb.RUN_START:
            if owner.finished:
                owner.ended = False  # resumed by its owner
            if len(owner.open_ranks) < limits.WORLD_SIZE_MAX:
                owner.open_ranks.add(rank)
        elif kind == pb.RUN_END:
            owner.open_ranks.discard(rank)
            owner.ended = True
        return None

    def _put(self, run_id: str, owner: RunOwner) -> None:
        self._runs[run_id] = owner
        self._runs.move_to_end(run_id)
        while len(self._runs) > self.max_runs:
            old_id, old = self._runs.popitem(last=False)
            self.evicted_total += 1
            if self._forgotten is not None:
                self._forgotten.forget(old_id, old)
            if self._on_evict is not None:
                self._on_evict(old_id, old)
