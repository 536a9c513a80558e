"""The train / evaluate loop: accumulation, markers at every boundary, cooperative stop.

One optimizer step = `accumulation_steps` micro-batches of LBS on every rank; gradients are only
all-reduced on the last one (DDP `no_sync` on the others) and each micro-batch loss is divided by
the accumulation count, so a step applies exactly the gradient of the mean loss over GBS samples.
Markers: EPOCH_START/END around each epoch (END after evaluation, carrying its metrics) and
STEP_START/END around each optimizer step (one `run.step()`: a step starts where the previous
boundary ended), stamped by parawatt's step clock (see `parawatt/clock.py`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from trainer.data import Batches, DataBundle
from trainer.train import metrics as M
from trainer.train.distributed import DistContext, StopAgreement
from trainer.train.recipes import BatchPlan, Recipe, lr_at


@dataclass
class EpochResult:
    epoch: int
    steps: int
    train_loss: float
    metrics: dict[str, float]
    duration_s: float
    complete: bool


@dataclass
class LoopParts:
    ctx: DistContext
    model: nn.Module  # what training runs through (DDP-wrapped when distributed)
    eval_model: nn.Module  # the same weights, unwrapped (no collectives in evaluation)
    optimizer: torch.optim.Optimizer
    recipe: Recipe
    plan: BatchPlan
    train_loader: Batches
    eval_loader: Batches | None
    data: DataBundle
    run: object  # a parawatt Run (started)
    progress: object
    stop: object  # .requested
    task: str  # classification | fields
    out_channels: int = 0
    eval_batches: int | None = None
    amp_dtype: torch.dtype | None = None
    scaler: object | None = None
    channels_last: bool = False
    stop_check_every: int = 1


@dataclass
class LoopTotals:
    steps: int = 0
    micro_batches: int = 0
    step_times_s: list[float] = field(default_factory=list)


class TrainLoop:
    def __init__(self, parts: LoopParts):
        self.p = parts
        self.agreement = StopAgreement(parts.ctx, parts.stop_check_every)
        self.totals = LoopTotals()
        self.ddp = isinstance(parts.model, nn.parallel.DistributedDataParallel)

    def run(self, start_epoch: int, on_epoch_end: Callable[[EpochResult], None]) -> str:
        """Train epochs start_epoch..epochs-1; -> "completed" or "interrupted" (same on all ranks)."""
        for epoch in range(start_epoch, self.p.recipe.epochs):
            result = self.run_epoch(epoch)
            on_epoch_end(result)
            if not result.complete:
                return "interrupted"
        self.agreement.finish()
        return "completed"

    def run_epoch(self, epoch: int) -> EpochResult:
        p, spe = self.p, self.p.recipe.steps_per_epoch
        p.run.begin_epoch(epoch)
        began = time.perf_counter()
        batches = p.train_loader.iterate(epoch)
        p.model.train()
        loss_sum = torch.zeros((), device=p.ctx.device, dtype=torch.float64)
        steps = 0
        for i in range(spe):
            if self.agreement.should_stop(p.stop.requested):
                break
            loss = self.train_step(batches, epoch, epoch * spe + i)
            loss_sum += loss.double()
            steps += 1
        complete = steps == spe
        if not complete:
            self.agreement.finish()
        train_loss = float(p.ctx.all_reduce_sum(loss_sum)) / max(1, steps * p.ctx.world_size)
        done_steps = epoch * spe + steps
        result = {
            "train_loss": train_loss,
            "steps": float(steps),
            "samples": float(steps * p.plan.global_batch_size),
            "samples_seen": float(done_steps * p.plan.global_batch_size),
        }
        if complete:
            result.update(self.evaluate(epoch))
        else:
            result["partial"] = 1.0
        duration = time.perf_counter() - began
        result["duration_s"] = duration
        p.run.end_epoch(result)
        p.progress.epoch_end(epoch, p.recipe.epochs, result, duration, complete)
        return EpochResult(epoch, steps, train_loss, result, duration, complete)

    def train_step(self, batches, epoch: int, step: int) -> torch.Tensor:
        p = self.p
        lr = lr_at(p.recipe, step)
        for group in p.optimizer.param_groups:
            group["lr"] = lr
        began = time.perf_counter()
        loss = self._accumulate(batches)
        # On CUDA the run copies the loss to the host asynchronously; its sender reads it only
        # once the step-end event has completed, so this never waits for the GPU.
        p.run.next_step = step
        p.run.step(loss=loss, lr=lr, samples=p.plan.global_batch_size)
        self.totals.step_times_s.append(time.perf_counter() - began)
        self.totals.steps += 1
        p.progress.step(epoch, lambda: f"loss {float(loss):.4f} lr {lr:.3g}")
        return loss

    def _accumulate(self, batches) -> torch.Tensor:
        p = self.p
        accum = p.plan.accumulation_steps
        total = None
        for micro in range(accum):
            x, y = next(batches)
            x = self._input(x)
            y = y.to(p.ctx.device, non_blocking=True)
            last = micro == accum - 1
            sync = contextlib.nullcontext() if last or not self.ddp else p.model.no_sync()
            with sync:
                with self._autocast():
                    loss = self.loss(p.model(x), y)
                scaled = loss / accum
                (p.scaler.scale(scaled) if p.scaler else scaled).backward()
            total = loss.detach() if total is None else total + loss.detach()
            self.totals.micro_batches += 1
        if p.scaler:
            p.scaler.step(p.optimizer)
            p.scaler.update()
        else:
            p.optimizer.step()
        p.optimizer.zero_grad(set_to_none=True)
        return total / accum

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.p.task == "classification":
            return F.cross_entropy(output.float(), target)
        c, output = self.p.out_channels, output.float()
        steps = output.shape[1] // c
        return sum(
            M.relative_l2(output[:, k * c : (k + 1) * c], target[:, k * c : (k + 1) * c])
            for k in range(steps)
        )

    def _eval_length(self) -> int | None:
        """Batches this rank evaluates: the loader's length, capped by `eval_batches`."""
        try:
            n = len(self.p.eval_loader.loader)  # type: ignore[union-attr]
        except (TypeError, AttributeError):
            return self.p.eval_batches
        return n if self.p.eval_batches is None else min(n, self.p.eval_batches)

    @torch.no_grad()
    def evaluate(self, epoch: int = 0) -> dict[str, float]:
        p = self.p
        if p.eval_loader is None:
            return {}
        model, device = p.eval_model, p.ctx.device
        model.eval()
        classify = p.task == "classification"
        sums = (
            M.EvalSums.classification(device)
            if classify
            else M.EvalSums.fields(p.out_channels, device)
        )
        p.progress.eval_start(epoch, self._eval_length())
        for index, (x, y) in enumerate(p.eval_loader.iterate()):
            if p.eval_batches is not None and index >= p.eval_batches:
                break
            p.progress.eval_step()
            x, y = self._input(x), y.to(device, non_blocking=True)
            with self._autocast():
                out = model(x)
            if classify:
                M.classification_batch(sums, out.float(), y)
            else:
                c = p.out_channels
                M.fields_batch(sums, out[:, :c].float(), y[:, :c], self.loss(out, y), self._clim())
        p.progress.eval_end()
        totals = sums.reduce(p.ctx.all_reduce_sum)
        if classify:
            return M.classification_result(totals)
        return M.fields_result(totals, p.data.stds)

    def _clim(self) -> torch.Tensor | None:
        clim = self.p.data.climatology
        if clim is None:
            return None
        if not hasattr(self, "_clim_t"):
            self._clim_t = torch.as_tensor(clim, dtype=torch.float32, device=self.p.ctx.device)
        return self._clim_t

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if self.p.channels_last:
            return x.to(self.p.ctx.device, non_blocking=True, memory_format=torch.channels_last)
        return x.to(self.p.ctx.device, non_blocking=True)

    def _autocast(self):
        if self.p.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.p.ctx.device.type, dtype=self.p.amp_dtype)
