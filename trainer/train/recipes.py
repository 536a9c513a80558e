"""Training recipes of the study (pure: no torch, no I/O): batch arithmetic and LR schedules.

ResNet50 (Goyal et al. 2017, as DESIGN.md states it): SGD momentum 0.9, weight decay 1e-4, peak LR
0.1 x GBS / 256, 5 warm-up epochs ramping linearly per step from the GBS-256 LR (0.1) up to the
peak, then *step* decay by 10x at epochs 30, 60 and 80 of 90 (scaled to the run's length, so a
short run decays at the same fractions); `--lr-schedule cosine` swaps in a per-step cosine decay.

FourCastNet (NVlabs reference): Adam, LR 5e-4 for pre-training and 1e-4 for two-step fine-tuning,
cosine annealing to 0 stepped once per epoch (the reference's `CosineAnnealingLR(T_max=epochs)`).

GBS = LBS x world size x accumulation: the optimizer sees GBS samples per step, a device holds LBS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.errors import ConfigError

RESNET_BASE_LR = 0.1
RESNET_BASE_BATCH = 256
STEP_DECAY_FRACTIONS = (30 / 90, 60 / 90, 80 / 90)
DEFAULT_LBS = {"resnet50": 64, "fourcastnet": 2}
DEFAULT_EPOCHS = {("resnet50", "pretrain"): 90, ("fourcastnet", "pretrain"): 80}
DEFAULT_EPOCHS_FINETUNE = 50


@dataclass(frozen=True)
class BatchPlan:
    global_batch_size: int
    local_batch_size: int
    accumulation_steps: int


def plan_batches(gbs: int | None, lbs: int | None, world_size: int, model: str) -> BatchPlan:
    """Check and complete GBS / LBS for `world_size` devices; accumulation follows from them."""
    if world_size < 1:
        raise ConfigError(f"world size must be >= 1, got {world_size}")
    if lbs is None and gbs is not None and gbs >= world_size and gbs % world_size:
        raise ConfigError(
            f"--global-batch-size {gbs} does not split evenly over world size {world_size} "
            "(GBS = LBS x world size x accumulation steps)"
        )
    if lbs is None:
        lbs = DEFAULT_LBS[model] if gbs is None else gbs // world_size
    if lbs < 1:
        raise ConfigError(
            f"--global-batch-size {gbs} is smaller than the world size {world_size}: "
            "every device needs at least one sample"
        )
    if gbs is None:
        gbs = lbs * world_size
    per_micro_step = lbs * world_size
    if gbs < 1 or gbs % per_micro_step:
        raise ConfigError(
            f"--global-batch-size {gbs} is not a multiple of --local-batch-size {lbs} x world size "
            f"{world_size} = {per_micro_step} (GBS = LBS x world size x accumulation steps)"
        )
    return BatchPlan(gbs, lbs, gbs // per_micro_step)


def steps_per_epoch(dataset_size: int, world_size: int, plan: BatchPlan, cap: int | None) -> int:
    """Optimizer steps per epoch under DistributedSampler(drop_last=True), capped by `cap`."""
    per_rank = dataset_size // world_size
    full = per_rank // (plan.local_batch_size * plan.accumulation_steps)
    if full < 1:
        raise ConfigError(
            f"the training set has {dataset_size} samples, fewer than one global batch of "
            f"{plan.global_batch_size}: use a smaller --global-batch-size or more data"
        )
    return full if cap is None else min(full, cap)


def default_epochs(model: str, mode: str) -> int:
    return DEFAULT_EPOCHS_FINETUNE if mode == "finetune" else DEFAULT_EPOCHS[(model, "pretrain")]


@dataclass(frozen=True)
class Recipe:
    optimizer: str  # sgd | adam
    peak_lr: float
    start_lr: float  # LR at step 0 of the warm-up
    momentum: float
    weight_decay: float
    schedule: str  # step | cosine
    cosine_per_epoch: bool
    warmup_steps: int
    steps_per_epoch: int
    epochs: int
    mode: str
    loss: str  # cross_entropy | relative_l2 | relative_l2_two_step

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def as_map(self) -> dict[str, str]:
        """String map for the run-start marker's RunConfig.recipe."""
        return {
            "optimizer": self.optimizer,
            "peak_lr": repr(self.peak_lr),
            "start_lr": repr(self.start_lr),
            "momentum": repr(self.momentum),
            "weight_decay": repr(self.weight_decay),
            "schedule": self.schedule + ("_per_epoch" if self.cosine_per_epoch else ""),
            "warmup_steps": str(self.warmup_steps),
            "mode": self.mode,
            "loss": self.loss,
        }


def make_recipe(
    model: str,
    mode: str,
    gbs: int,
    epochs: int,
    steps_per_epoch: int,
    *,
    lr: float | None = None,
    schedule: str | None = None,
    warmup_epochs: float | None = None,
) -> Recipe:
    if model == "resnet50":
        if mode != "pretrain":
            raise ConfigError("--mode finetune is a FourCastNet mode; ResNet50 only pre-trains")
        peak = lr if lr is not None else RESNET_BASE_LR * gbs / RESNET_BASE_BATCH
        warm = 5.0 if warmup_epochs is None else warmup_epochs
        return Recipe(
            optimizer="sgd",
            peak_lr=peak,
            start_lr=peak * min(1.0, RESNET_BASE_BATCH / gbs),
            momentum=0.9,
            weight_decay=1e-4,
            schedule=schedule or "step",
            cosine_per_epoch=False,
            warmup_steps=round(warm * steps_per_epoch),
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            mode=mode,
            loss="cross_entropy",
        )
    peak = lr if lr is not None else (1e-4 if mode == "finetune" else 5e-4)
    warm = 0.0 if warmup_epochs is None else warmup_epochs
    return Recipe(
        optimizer="adam",
        peak_lr=peak,
        start_lr=0.0,
        momentum=0.0,
        weight_decay=0.0,
        schedule=schedule or "cosine",
        cosine_per_epoch=True,
        warmup_steps=round(warm * steps_per_epoch),
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        mode=mode,
        loss="relative_l2_two_step" if mode == "finetune" else "relative_l2",
    )


def lr_at(recipe: Recipe, step: int) -> float:
    """LR for optimizer step `step` (0-based over the whole run)."""
    peak, warm = recipe.peak_lr, recipe.warmup_steps
    if step < warm:
        return recipe.start_lr + (peak - recipe.start_lr) * step / warm
    if recipe.schedule == "step":
        epoch = step // recipe.steps_per_epoch
        drops = sum(epoch >= max(1, round(f * recipe.epochs)) for f in STEP_DECAY_FRACTIONS)
        return peak * 0.1**drops
    if recipe.cosine_per_epoch:
        done, span = step // recipe.steps_per_epoch, recipe.epochs
    else:
        done, span = step - warm, recipe.total_steps - warm
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(done, span) / max(span, 1)))
