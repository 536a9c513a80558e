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
`on_evict`). A run forgotten by a daemon is owned again by its next marker; the collector reloads
it from the database.
"""

from __future__ import annotations

import hashlib
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

    @property
    def finished(self) -> bool:
        return self.ended and not self.open_ranks


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    first: bool  # the run's first refused marker (log it; later ones are only counted)


class RunLedger:
    def __init__(
        self, max_runs: int = 65_536, on_evict: Callable[[str, RunOwner], None] | None = None
    ) -> None:
        self.max_runs = max_runs
        self._runs: OrderedDict[str, RunOwner] = OrderedDict()
        self._on_evict = on_evict
        self.rejected_total = 0
        self.evicted_total = 0

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
        """Apply the rule to one marker: None (accepted, and remembered) or why it is refused."""
        owner = self._runs.get(run_id)
        if owner is None:
            owner = RunOwner(sha256)
            self._put(run_id, owner)
        else:
            self._runs.move_to_end(run_id)
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
            if self._on_evict is not None:
                self._on_evict(old_id, old)
