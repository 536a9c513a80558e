"""The collector's side of run ownership (the rule: parawatt_proto.ownership).

The collector is the authority across nodes: it sees every node's markers of a run, and its
database keeps each run's owner (the token hash of the first stored RUN_START). Markers from the
streams pass this gate before the join and the database see them: a marker whose token hash is
not the run's owner's, or that comes for a finished run, is dropped, counted and logged once per
run. What the gate does not know yet it asks the database (runs started before a restart, or
stored by another collector); the store checks the owner once more when it writes run rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from collector.errors import StoreError
from collector.metrics.state import LiveState
from parawatt_proto.fields import MARKER_KIND_OF
from parawatt_proto.ownership import RunLedger, RunOwner
from parawatt_proto.records import MarkerRec

log = logging.getLogger(__name__)

KIND = {name: MARKER_KIND_OF[name] for name in ("run_start", "run_end")}
Loader = Callable[[set[str]], dict[str, RunOwner]]


class OwnershipGate:
    def __init__(self, load: Loader, live: LiveState, max_runs: int = 100_000) -> None:
        self._load = load
        self.live = live
        self.ledger = RunLedger(max_runs, self._forgot)
        self._logged_at = {"evict": -60.0, "load": -60.0}

    def filter(self, markers: Iterable[MarkerRec]) -> list[MarkerRec]:
        markers = list(markers)
        unknown = {m.run_id for m in markers if m.run_id not in self.ledger}
        if unknown:
            self._seed(unknown)
        kept = []
        for m in markers:
            refusal = self.ledger.admit(m.run_id, m.rank, KIND.get(m.kind, 0), m.token_sha256)
            if refusal is None:
                kept.append(m)
                continue
            with self.live.lock:
                self.live.markers_refused_total += 1
            if refusal.first:
                log.warning(
                    "refused markers of run %r (from rank %d on %r; later ones only counted): %s",
                    m.run_id, m.rank, m.hostname, refusal.reason,
                )  # fmt: skip
        return kept

    def _seed(self, run_ids: set[str]) -> None:
        try:
            known = self._load(run_ids)
        except StoreError as exc:  # the database is down: decide on what the streams show
            if self._due("load"):
                log.warning("cannot read run owners (%s); judging by the streams alone", exc)
            return
        for run_id, owner in known.items():
            self.ledger.seed(run_id, owner)

    def _forgot(self, run_id: str, owner: RunOwner) -> None:
        if self._due("evict"):
            log.info(
                "run owner table full (%d runs): forgot run %r; it is read again from the "
                "database when it next sends markers",
                self.ledger.max_runs, run_id,
            )  # fmt: skip

    def _due(self, what: str) -> bool:
        now = time.monotonic()
        if now - self._logged_at[what] < 60.0:
            return False
        self._logged_at[what] = now
        return True
