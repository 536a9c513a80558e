"""The daemon's core: backend + sampler + ring buffer + marker intake (no gRPC here).

Payload encoding is injected (the gRPC adapter stores protobuf bytes), so this module knows
nothing of the wire format.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from parawatt_proto.fields import MARKER_KIND_OF
from parawatt_proto.ownership import RunLedger, RunOwner
from parawatt_proto.records import MarkerRec
from power_daemon.backends.base import Backend
from power_daemon.buffer import RingBuffer, StartPlan, plan_start
from power_daemon.calibrate import calibrate_devices, phase_warnings, sampling_config
from power_daemon.config import DaemonConfig
from power_daemon.markers import resolve
from power_daemon.model import DeviceKind, DeviceSpec, Sample
from power_daemon.sampler import Sampler

log = logging.getLogger(__name__)

# Entries of the record of forgotten runs (16 bytes each): 4 MiB for the default 65,536 runs.
FORGOTTEN_PER_RUN = 4
MAX_FORGOTTEN = 1 << 20

EncodeReading = Callable[[int, Sample], bytes]
EncodeMarker = Callable[[int, int, MarkerRec], bytes]  # (seq, index in batch, resolved marker)


@dataclass(frozen=True, slots=True)
class LatestReading:
    seq: int
    sample: Sample


class Daemon:
    def __init__(
        self, config: DaemonConfig, backend: Backend, hostname: str, encode_reading: EncodeReading
    ) -> None:
        self.config = config
        self.backend = backend
        self.hostname = hostname
        self.boot_id = str(uuid.uuid4())
        self.started_ns = time.time_ns()
        self.devices: list[DeviceSpec] = backend.devices()
        if config.calibrate_s > 0:  # measured sensor facts instead of the backend's constants
            self.devices = calibrate_devices(backend, self.devices, config.calibrate_s)
        tuned = sampling_config(config, self.devices)
        if tuned is not config:
            log.info(
                "sampling every %g ms, not %g: the measured counter period would put its "
                "updates at too few phases of the readings", tuned.interval_ms, config.interval_ms,
            )  # fmt: skip
            config = self.config = tuned
        for line in phase_warnings(config.interval_ms / 1e3, self.devices):
            log.warning("sampling phase: %s", line)  # the collector cannot pin the updates
        self.gpu_uuids = [d.uuid for d in self.devices if d.kind == DeviceKind.GPU]
        self.buffer = RingBuffer(config.buffer_capacity)
        self._encode_reading = encode_reading
        self._latest: dict[int, LatestReading] = {}
        self._intake_lock = threading.Lock()
        # The runs it forgets are kept in a fixed record, so that a flood of made-up runs cannot
        # hand a live run to another token (parawatt_proto.ownership).
        forgotten = min(FORGOTTEN_PER_RUN * config.max_runs, MAX_FORGOTTEN)
        self.owners = RunLedger(config.max_runs, self._forgot_run, forgotten)
        self._evict_logged = -60.0
        self.invalid_requests_total = 0  # refused with INVALID_ARGUMENT (garbage, implausible)
        self.sampler = Sampler(
            config.interval_ns, self.sample_once, "power-daemon-sampler", config.sampler_nice,
            realtime=config.sampler_realtime,
        )  # fmt: skip
        self._started = False
        self._closed = False

    def start(self) -> None:
        """Take the first reading of every device now (so GetLatest is never empty once the
        server is up), then sample on schedule in the background."""
        if self._started:
            return
        self._started = True
        try:
            self.sample_once()
        except Exception:
            log.exception("first reading failed; the sampler keeps trying")
        self.sampler.start(tick_now=False)

    def sample_once(self, now_ns: int | None = None) -> int:
        """Read every device once and store the readings; returns the new next_seq."""
        now = time.time_ns() if now_ns is None else now_ns
        samples = self.backend.read(now)
        return self.record(samples)

    def record(self, samples: Sequence[Sample]) -> int:
        new: dict[int, LatestReading] = {}

        def encode(seq: int, s: Sample) -> bytes:
            new[s.device] = LatestReading(seq, s)
            return self._encode_reading(seq, s)

        next_seq = self.buffer.append(samples, encode)
        # Swapped whole, so readers in other threads never see a dict being changed.
        self._latest = {**self._latest, **new}
        return next_seq

    def latest(self) -> list[LatestReading]:
        latest = self._latest
        return [latest[i] for i in sorted(latest)]

    def accept_markers(self, markers: Sequence[MarkerRec], encode: EncodeMarker) -> tuple[int, int]:
        """Markers already validated: refuse those run ownership forbids (parawatt_proto.
        ownership), fill in hostname and device, store the rest, and tell the backend.
        Returns (the new next_seq, how many were refused)."""
        canonical = self.backend.canonical_uuid
        with self._intake_lock:  # keeps the backend seeing markers in seq order
            kept = [m for m in markers if self._owned(m)]
            resolved = [resolve(m, self.hostname, self.gpu_uuids, canonical) for m in kept]
            next_seq = self.buffer.append(
                list(enumerate(resolved)), lambda seq, item: encode(seq, item[0], item[1])
            )
            now = time.time_ns()
            for m in resolved:
                try:
                    self.backend.on_marker(m, now)
                except Exception:  # the markers are stored; a backend bug must not lose them
                    log.exception("backend %s failed on a marker", self.backend.name)
        return next_seq, len(markers) - len(kept)

    def _owned(self, m: MarkerRec) -> bool:
        refusal = self.owners.admit(m.run_id, m.rank, MARKER_KIND_OF.get(m.kind, 0), m.token_sha256)
        if refusal is None:
            return True
        if refusal.first:  # later refusals of the run are only counted
            log.warning(
                "refused markers of run %r (rank %d and later ones not logged): %s",
                m.run_id, m.rank, refusal.reason,
            )  # fmt: skip
        return False

    def _forgot_run(self, run_id: str, owner: RunOwner) -> None:
        now = time.monotonic()
        if now - self._evict_logged >= 60.0:
            self._evict_logged = now
            log.warning(
                "run table full (%d runs): forgot the least recently used, run %r (%d "
                "forgotten so far); only its owner's token brings it back",
                self.owners.max_runs, run_id, self.owners.evicted_total,
            )  # fmt: skip

    def plan_subscription(self, from_seq: int, boot_id: str) -> StartPlan:
        first, nxt = self.buffer.bounds()
        return plan_start(from_seq, boot_id, self.boot_id, first, nxt)

    def close(self) -> None:
        """Stop sampling and end every follower's stream; the backend is closed by its owner."""
        if self._closed:
            return
        self._closed = True
        self.sampler.close()
        self.buffer.close()
