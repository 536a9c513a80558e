"""`parawatt.track()`: one training run's boundaries, sent to the node's power daemon.

    with parawatt.track(config={"model": "mynet"}) as run:
        for epoch in range(epochs):
            with run.epoch():
                for batch in loader:
                    ...
                    run.step(loss=loss)

A step is one queued item (its start is the previous boundary: the last step's end, or the
epoch's start), stamped by the step clock: the host clock on the CPU, a CUDA event on a GPU
(resolved later by the sender thread; no host sync). CUDA tensors given as metrics are copied to
the host asynchronously before the stamp, so the sender reads them only once they are there.

Leaving the block by an exception ends the run `failed`, by KeyboardInterrupt or SIGTERM
`interrupted` (SIGTERM is turned into an exception only where nothing else handles it), else
`completed`. Callbacks without a block use `run.start()` / `run.end(status)`; a run still open at
interpreter exit is ended there (`interrupted` after an uncaught KeyboardInterrupt, `failed` after
another uncaught exception).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field

from parawatt import env, facts
from parawatt.client import EPOCH_END, EPOCH_START, STATUS, MarkerClient, NullMarkerClient
from parawatt.clock import clock_for
from parawatt_proto import limits as L
from parawatt_proto.transport import ClientTLS, parse_target

log = logging.getLogger("parawatt")
_open_runs: weakref.WeakSet = weakref.WeakSet()
_uncaught: list[BaseException] = []
_hooked = threading.Lock()


class Terminated(SystemExit):
    """SIGTERM while a run is open (where nothing else handles SIGTERM): exit status 143."""

    def __init__(self):
        super().__init__(128 + signal.SIGTERM)


def status_for(exc: BaseException | None) -> str:
    if exc is None:
        return "completed"
    if isinstance(exc, KeyboardInterrupt | Terminated) or type(exc).__name__ == "SIGTERMException":
        return "interrupted"
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return "completed"
    return "failed"


@dataclass
class Epoch:
    index: int
    metrics: dict = field(default_factory=dict)  # sent with EPOCH_END


class Run:
    def __init__(self, daemon=None, run_id=None, config=None, tags=None, device=None, *,
                 tls: ClientTLS | None = None, process_group=None, close_timeout_s: float = 5.0,
                 client_options: dict | None = None, run_token: bytes | None = None,
                 clock=None):  # fmt: skip
        # The daemon refuses every marker of a run whose id, token or config it does not take,
        # and the run would go unrecorded with only a warning: refuse them now instead (with
        # markers off nothing is sent, and nothing is refused).
        if env.daemon_address(daemon) is not None:
            if run_id:
                check_run_id(run_id)
            if run_token is not None:
                _check_token(run_token)
            facts.run_config({}, config, tags)
        self._args = (daemon, run_id, config, tags, device, tls, process_group)
        self._given_token = run_token  # a run resumed by its owner keeps its token
        self._given_clock = clock  # a step clock (parawatt.clock); default: by device
        self._close_timeout_s, self._client_options = close_timeout_s, client_options or {}
        self.id: str | None = run_id
        self.status: str | None = None  # None until the run ended
        self.metrics: dict[str, float] = {}  # extra RUN_END metrics
        self.summary: dict = {}
        self.next_step = 0
        self.steps = 0
        self._client = NullMarkerClient()
        self._epoch: Epoch | None = None
        self._next_epoch = 0
        self._started = False
        self._previous_sigterm = None
        self.place, self.config = env.Place(), {}
        self._stamp, self._cuda, self._prev = time.time_ns, False, 0
        self._mark_step = self._client.mark_step

    # -- life cycle ------------------------------------------------------------------------
    def start(self, metrics: dict | None = None) -> Run:
        """RUN_START (with optional metrics); a collective when torch.distributed is up."""
        if self._started:
            return self
        daemon, run_id, config, tags, device, tls, group = self._args
        address = env.daemon_address(daemon)
        if address is not None:
            parse_target(address)  # a malformed address fails here, with its reason
        where = env.place()
        index = facts.cuda_index(device)
        name = str((config or {}).get("model", "run"))
        self.id, token, how = env.agree(run_id, name, where, group, token=self._given_token)
        if address is not None:
            check_run_id(self.id, f"(from run_id=, ${env.ENV_RUN_ID} or the launcher)")
        if not token:
            log.warning("parawatt: %d ranks without torch.distributed and no $%s: run %r is not "
                        "protected by a run token", where.world_size, env.ENV_RUN_TOKEN, self.id)  # fmt: skip
        self.place, self.config = where, self._config(where, index, config, tags, address)
        self._clock = self._given_clock or clock_for(index if address is not None else None)
        self._cuda = self._clock.cuda
        self._stamp = self._clock.stamp
        if address is not None:
            self._client = MarkerClient(
                address, run_id=self.id, rank=where.rank, local_rank=where.local_rank,
                device_uuid=self.config.get("device_uuid", ""), run_token=token,
                tls=tls if tls is not None else ClientTLS.from_env(),
                resolve_time=self._clock.resolve, thread_init=self._clock.thread_init,
                **self._client_options,
            )  # fmt: skip
        self._mark_step = self._client.mark_step
        self._began = time.perf_counter()
        self._clock.start()
        self._client.mark_run_start(self.config, metrics)
        self._prev = self._stamp()
        self._started = True
        _open_runs.add(self)
        _hook_exit()
        self._catch_sigterm()
        log.debug("parawatt: run %r rank %d, ids agreed by %s, daemon %s",
                  self.id, where.rank, how, address or "off")  # fmt: skip
        return self

    def end(self, status: str = "completed") -> dict:
        """RUN_END with `status`, then flush (bounded); -> the run's summary. Idempotent.
        A status the daemon does not know is refused before anything changes, so the run can
        still be ended properly."""
        if status not in STATUS:
            raise ValueError(
                f"run.end({status!r}): the status must be one of {', '.join(map(repr, STATUS))}"
            )
        if not self._started or self.status is not None:
            return self.summary
        if self._epoch is not None:
            self.end_epoch(partial=status != "completed")
        self.status = status
        stats = self._client.stats()
        # markers_sent: this rank's markers, this run end included (what the trainer's summary
        # reports once they are delivered), not just those already out of the queue
        queued = 0 if isinstance(self._client, NullMarkerClient) else stats.enqueued + 1
        metrics = {"steps": float(self.steps), "markers_sent": float(queued - stats.dropped),
                   "markers_dropped": float(stats.dropped),
                   "duration_s": time.perf_counter() - self._began}  # fmt: skip
        metrics.update(self.metrics)
        clock = self._clock

        def end_metrics() -> dict:  # the sender's, once it has resolved every stamp before it
            return {**metrics, **clock.stats(), **self.metrics}

        self._client.mark_run_end(status, end_metrics, self._end_stamp())
        stats = self._client.close(timeout_s=self._close_timeout_s)
        clock = self._clock.stats()  # every stamp resolved by now
        self._client = NullMarkerClient()
        self._mark_step = self._client.mark_step
        _open_runs.discard(self)
        self._restore_sigterm()
        self.summary = {
            "run_id": self.id, "status": status, "rank": self.place.rank,
            "world_size": self.place.world_size, "steps": self.steps, "epochs": self._next_epoch,
            "duration_s": metrics["duration_s"], "markers_sent": stats.sent,
            "markers_dropped": stats.dropped, **clock,
        }  # fmt: skip
        if stats.dropped:
            log.warning("parawatt: run %r rank %d: %d of %d markers dropped (daemon not reached "
                        "or refused them)", self.id, self.place.rank, stats.dropped,
                        stats.enqueued)  # fmt: skip
        return self.summary

    def _end_stamp(self):
        """On CUDA the run ends when the GPU has done its work (an event); after a CUDA error,
        recording one may fail: then the host clock."""
        try:
            return self._stamp()
        except Exception:
            return time.time_ns()

    def __enter__(self) -> Run:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end(status_for(exc))

    def __repr__(self) -> str:  # never the token
        return f"Run(id={self.id!r}, status={self.status!r}, steps={self.steps})"

    # -- epochs and steps (training thread) ------------------------------------------------
    def begin_epoch(self, index: int | None = None) -> Epoch:
        if index is not None and not 0 <= int(index) <= L.EPOCH_MAX:  # the daemon refuses it
            raise ValueError(f"epoch {index}: epochs are numbered 0..{L.EPOCH_MAX}")
        if self._epoch is not None:
            self.end_epoch()
        index = self._next_epoch if index is None else int(index)
        stamp = self._stamp()
        self._client.mark(EPOCH_START, index, 0, None, stamp)
        self._epoch, self._prev = Epoch(index), stamp
        return self._epoch

    def end_epoch(self, metrics: dict | None = None, partial: bool = False) -> None:
        epoch, self._epoch = self._epoch, None
        if epoch is None:
            return
        values = {**epoch.metrics, **(metrics or {})}
        if partial:
            values["partial"] = 1.0
        if self._cuda and values:
            values = _to_host(values)
        self._client.mark(EPOCH_END, epoch.index, 0, values or None, self._end_stamp())
        self._next_epoch = epoch.index + 1

    @contextlib.contextmanager
    def epoch(self, index: int | None = None):
        """EPOCH_START / EPOCH_END around the block; epochs are numbered 0, 1, ... unless given.
        Put end-of-epoch metrics into the yielded `Epoch.metrics`."""
        epoch = self.begin_epoch(index)
        try:
            yield epoch
        except BaseException:
            if self._epoch is epoch:
                self.end_epoch(partial=True)
            raise
        if self._epoch is epoch:
            self.end_epoch()

    def step(self, **metrics) -> None:
        """One optimizer step ended (it began at the previous step's end or the epoch's start).
        Metrics are optional numbers or tensors; this never waits for the GPU."""
        if metrics and self._cuda:
            metrics = _to_host(metrics)
        end = self._stamp()
        epoch = self._epoch
        self._mark_step(epoch.index if epoch else 0, self.next_step, self._prev, end,
                        metrics or None)  # fmt: skip
        self._prev = end
        self.next_step += 1
        self.steps += 1

    # -- SIGTERM ---------------------------------------------------------------------------
    def _catch_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # the framework (or the trainer) handles SIGTERM itself

        def handler(signum, frame):
            raise Terminated

        self._previous_sigterm = signal.signal(signal.SIGTERM, handler)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None:
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    def _config(self, where, index, config, tags, address) -> dict:
        found = facts.hardware(index)
        found.update(world_size=where.world_size, nodes=where.nodes, local_rank=where.local_rank,
                     local_world_size=where.local_world_size, recipe=facts.framework())  # fmt: skip
        if where.backend:
            found["backend"] = where.backend
        # markers off: nothing is sent, so nothing need fit the daemon's limits
        return facts.run_config(found, config, tags, check_limits=address is not None)


def track(daemon=None, run_id=None, config=None, tags=None, device=None, **options) -> Run:
    """A run to use as a context manager (or `.start()` / `.end(status)`).

    daemon: HOST:PORT, [v6]:PORT or unix:PATH; default $PARAWATT_DAEMON, else 127.0.0.1:50051;
    "off" sends nothing. run_id: default $PARAWATT_RUN_ID, else made by rank 0 (broadcast when
    torch.distributed is initialised). config: RunConfig fields (model, global_batch_size, ...;
    other keys go to its recipe map). tags: free-form text map. device: the training device
    (default: the current CUDA device when CUDA is in use, else the CPU).

    A run id, config or tags the daemon would refuse (parawatt_proto.limits: e.g. a run id over
    128 characters or with control characters, a negative batch size) raise ValueError here,
    rather than leaving the whole run unrecorded."""
    return Run(daemon, run_id, config, tags, device, **options)


def check_run_id(run_id, source: str = "") -> str:
    """`run_id` when every part of parawatt takes it (parawatt_proto.limits), else ValueError."""
    where = f" {source}" if source else ""
    if not isinstance(run_id, str):
        raise ValueError(f"run id {run_id!r}{where}: expected a string")
    if reason := L.run_id_problem(run_id):
        raise ValueError(
            f"run id {run_id[:40]!r}{where} {reason}: use 1..{L.RUN_ID_MAX} characters, "
            "none of them a control or invisible one"
        )
    return run_id


def _check_token(token) -> None:
    """A given run token: bytes of the length the daemon accepts (never shown)."""
    if not isinstance(token, bytes | bytearray):
        raise ValueError(f"run_token: expected bytes, got {type(token).__name__}")
    if not L.RUN_TOKEN_MIN_BYTES <= len(token) <= L.RUN_TOKEN_MAX_BYTES:
        raise ValueError(
            f"run_token of {len(token)} bytes: the daemon takes "
            f"{L.RUN_TOKEN_MIN_BYTES}..{L.RUN_TOKEN_MAX_BYTES}"
        )


def _to_host(metrics: dict) -> dict:
    """CUDA tensors start an asynchronous copy to the host (read by the sender after the stamp)."""
    out = {}
    for key, value in metrics.items():
        if getattr(value, "is_cuda", False):
            value = value.detach().to("cpu", non_blocking=True)
        out[key] = value
    return out


def _hook_exit() -> None:
    if not _hooked.acquire(blocking=False):
        return
    previous = sys.excepthook

    def remember(exc_type, exc, tb):
        _uncaught.append(exc)
        previous(exc_type, exc, tb)

    sys.excepthook = remember
    atexit.register(_end_open_runs)


def _end_open_runs() -> None:
    status = status_for(_uncaught[-1]) if _uncaught else "completed"
    for run in list(_open_runs):
        with contextlib.suppress(Exception):
            run.end(status)
