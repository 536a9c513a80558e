"""One training session: set-up, the loop, and an orderly end whatever happens.

Every rank sends RUN_START with the full RunConfig, and RUN_END with its status: completed,
interrupted (Ctrl-C / SIGTERM: all ranks stop at the same step, see `StopAgreement`) or failed (an
exception; it is re-raised after the marker is queued and the client flushed).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import parawatt
from parawatt.env import new_run_id as _new_run_id
from trainer.config import TrainConfig
from trainer.errors import TrainerError
from trainer.system import param_fingerprint
from trainer.train import checkpoint as ckpt_io
from trainer.train.distributed import DistContext, init_distributed
from trainer.train.loop import EpochResult, TrainLoop
from trainer.train.session import Session, prepare
from trainer.ui import Progress, headline_metric, no_energy_line, start_line, summary_table

TOKEN_FILE = "run_token"  # beside the checkpoints; the run's ownership secret (mode 0600)


class StopRequest:
    """SIGINT / SIGTERM ask for a clean stop at the next step; a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested, self.signum = True, self.signum or signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


@dataclass
class Outcome:
    status: str  # completed | interrupted | failed
    signum: int | None
    summary: dict


def new_run_id(model: str) -> str:
    return _new_run_id(model)


def train(config: TrainConfig) -> Outcome:
    started = time.perf_counter()
    stop = StopRequest()
    stop.install()
    try:
        ctx = init_distributed()
    except BaseException:
        stop.restore()
        raise
    run: parawatt.Run | None = None
    session: Session | None = None
    loop: TrainLoop | None = None
    epochs: list[EpochResult] = []
    status, train_s = "failed", 0.0
    in_step = True  # every rank ends at the same point, so end-of-run collectives are safe
    try:
        session = prepare(config, ctx, new_run_id)
        session.start_loaders()
        session.setup_s = time.perf_counter() - started
        run = _make_run(config, ctx, session)
        if config.progress and ctx.is_main:
            print(
                start_line(session.run_id, config.model, ctx.world_size, config.daemon), flush=True
            )
        run.start({"start_epoch": float(session.start_epoch), "setup_s": session.setup_s})
        progress = Progress(
            config.progress and ctx.is_main,
            session.recipe.total_steps,
            session.start_epoch * session.recipe.steps_per_epoch,
        )
        loop = TrainLoop(session.loop_parts(run, progress, stop))
        began = time.perf_counter()
        try:
            status = loop.run(
                session.start_epoch, lambda r: _epoch_done(r, config, session, epochs)
            )
        finally:
            progress.close()
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()
            train_s = time.perf_counter() - began
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, ranks may be anywhere
        status, in_step = "interrupted", False
    finally:
        try:
            summary = _finish(
                config, ctx, session, loop, run, epochs, status, started, train_s, in_step
            )
        finally:  # even when the summary cannot be written: the process must be able to exit
            if session is not None:
                session.close_loaders()
            stop.restore()
            ctx.close()
    return Outcome(status, stop.signum, summary)


def _make_run(config: TrainConfig, ctx: DistContext, session: Session) -> parawatt.Run:
    """The trainer is a parawatt user: its run id (from --run-id, a checkpoint or rank 0) and
    full RunConfig; the run token is shared over the gloo control group, and kept beside the
    checkpoints so that a resumed session still owns its run."""
    token = _run_token(config, session) if ctx.is_main else None
    run = parawatt.track(
        daemon=config.daemon or "off",
        run_id=session.run_id,
        config=session.run_config,
        device=ctx.device,
        process_group=ctx.control,
        run_token=token,
    )
    run.next_step = session.start_step
    return run


def _run_token(config: TrainConfig, session: Session) -> bytes | None:
    """The run's token from `--checkpoint-dir` when resuming, else a new one saved there (owner
    read/write only). None without a checkpoint dir: parawatt makes one for this session."""
    if not config.checkpoint_dir:
        return None
    path = Path(config.checkpoint_dir) / TOKEN_FILE
    if session.start_epoch > 0 and path.exists():
        return bytes.fromhex(path.read_text().strip())
    token = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token.hex() + "\n")
    return token


def _epoch_done(result: EpochResult, config: TrainConfig, session: Session, epochs: list) -> None:
    epochs.append(result)
    if result.complete and config.checkpoint_dir and session.ctx.is_main:
        ckpt_io.save(config.checkpoint_dir, session.checkpoint(result.epoch))


def _finish(config, ctx, session, loop, run, epochs, status, started, train_s, in_step) -> dict:
    if session is None:
        return {"status": status}
    totals = loop.totals if loop is not None else None
    steps = totals.steps if totals else 0
    final = epochs[-1].metrics if epochs else {}
    checksum, sha = param_fingerprint(session.base_model)
    end_metrics = {k: v for k, v in final.items() if headline_metric(k)}
    end_metrics.update(
        steps=float(steps),
        samples=float(steps * session.plan.global_batch_size),  # this session, as the summary
        final_step=float(session.start_step + steps - 1),
        samples_seen=float((session.start_step + steps) * session.plan.global_batch_size),
        duration_s=time.perf_counter() - started,
        param_checksum=checksum,
    )
    ended = {}
    if run is not None:
        run.metrics.update(end_metrics)
        ended = run.end(status)
    per_rank = [{"rank": ctx.rank, "sent": ended.get("markers_sent", 0),
                 "dropped": ended.get("markers_dropped", 0), "sha": sha}]  # fmt: skip
    if status != "failed" and in_step:
        per_rank = ctx.gather_objects(per_rank[0])
    summary = _summary(config, ctx, session, totals, epochs, status, started, train_s, per_rank)
    summary["param_checksum"] = checksum
    if ctx.is_main:
        if config.progress:
            print(summary_table(summary), flush=True)
            if config.daemon is None or summary["markers"]["sent"] == 0:
                print(no_energy_line(config.daemon), flush=True)
        if config.output:
            _write_summary(Path(config.output), summary)
    return summary


def _write_summary(path: Path, summary: dict) -> None:
    """--output was checked before training, but the disk may have filled or the folder gone
    since: one clear error (the table above still shows the run), not a traceback."""
    try:
        path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise TrainerError(
            f"--output {path}: could not write the run's summary ({exc.strerror or exc}); "
            f"run {summary['run_id']} itself ended {summary['status']}"
        ) from exc


def _summary(config, ctx, session, totals, epochs, status, started, train_s, per_rank) -> dict:
    plan, recipe = session.plan, session.recipe
    steps = totals.steps if totals else 0
    samples = steps * plan.global_batch_size
    times = sorted(totals.step_times_s) if totals and totals.step_times_s else [0.0]
    return {
        "run_id": session.run_id,
        "status": status,
        "model": config.model,
        "mode": config.mode,
        "dataset": session.data.name,
        "dataset_size": len(session.data.train),
        "world_size": ctx.world_size,
        "nodes": ctx.nodes,
        "backend": ctx.backend,
        "global_batch_size": plan.global_batch_size,
        "local_batch_size": plan.local_batch_size,
        "accumulation_steps": plan.accumulation_steps,
        "epochs": recipe.epochs,
        "start_epoch": session.start_epoch,
        "steps_per_epoch": recipe.steps_per_epoch,
        "steps": steps,
        "final_step": session.start_step + steps - 1,
        "micro_batches": totals.micro_batches if totals else 0,
        "samples": samples,
        "duration_s": time.perf_counter() - started,
        "setup_duration_s": session.setup_s,
        "train_duration_s": train_s,
        "samples_per_s": samples / train_s if train_s > 0 else 0.0,
        "step_time_s": {"mean": sum(times) / len(times), "p50": times[len(times) // 2]},
        "metrics": epochs[-1].metrics if epochs else {},
        "epoch_results": [asdict(e) for e in epochs],
        "parameter_count": session.run_config["parameter_count"],
        "recipe": session.run_config["recipe"],
        "tags": config.tags_map,
        "markers": {
            "daemon": config.daemon or "none",
            "sent": sum(r["sent"] for r in per_rank),
            "dropped": sum(r["dropped"] for r in per_rank),
            "per_rank": [{k: r[k] for k in ("rank", "sent", "dropped")} for r in per_rank],
        },
        "param_sha256": [r["sha"] for r in per_rank],
    }
