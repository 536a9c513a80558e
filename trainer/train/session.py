"""Everything a run needs, built from the configuration on every rank: batch plan, data, model,
optimizer, resume state, run id and the RunConfig record of the run-start marker."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from trainer.config import TrainConfig, default_workers
from trainer.data import Batches, DataBundle, build_data, make_loader, seed_augmentations
from trainer.errors import CheckpointError
from trainer.models import Rollout, build_model, parameter_count
from trainer.system import device_record, software_record
from trainer.train import checkpoint as ckpt_io
from trainer.train.distributed import DistContext
from trainer.train.loop import LoopParts
from trainer.train.precision import amp_policy, apply_backend_flags, bf16_native
from trainer.train.recipes import BatchPlan, Recipe, default_epochs, make_recipe, plan_batches
from trainer.train.recipes import steps_per_epoch as count_steps


@dataclass
class Session:
    config: TrainConfig
    ctx: DistContext
    plan: BatchPlan
    recipe: Recipe
    data: DataBundle
    base_model: nn.Module
    model: nn.Module
    eval_model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: object | None
    amp_dtype: torch.dtype | None
    train_loader: Batches
    eval_loader: Batches | None
    run_id: str
    start_epoch: int
    run_config: dict
    signature: dict
    setup_s: float = 0.0  # process group, data, model and loader workers, before RUN_START

    @property
    def start_step(self) -> int:
        return self.start_epoch * self.recipe.steps_per_epoch

    def checkpoint(self, epoch: int) -> ckpt_io.Checkpoint:
        return ckpt_io.Checkpoint(
            self.run_id,
            epoch,
            (epoch + 1) * self.recipe.steps_per_epoch,
            self.base_model.state_dict(),
            self.optimizer.state_dict(),
            self.scaler.state_dict() if self.scaler is not None else None,
            self.signature,
        )

    def start_loaders(self) -> None:
        """Loader workers start now, as part of the set-up (see `trainer/data/loaders.py`)."""
        self.train_loader.start(self.start_epoch)
        if self.eval_loader is not None:
            self.eval_loader.start()

    def close_loaders(self) -> None:
        """Stop the loader workers (see `Batches.close`): a run that ends by an exception must
        still exit."""
        self.train_loader.close()
        if self.eval_loader is not None:
            self.eval_loader.close()

    def loop_parts(self, run, progress, stop) -> LoopParts:
        fields = self.config.model == "fourcastnet"
        return LoopParts(
            ctx=self.ctx,
            model=self.model,
            eval_model=self.eval_model,
            optimizer=self.optimizer,
            recipe=self.recipe,
            plan=self.plan,
            train_loader=self.train_loader,
            eval_loader=self.eval_loader,
            data=self.data,
            run=run,
            progress=progress,
            stop=stop,
            task="fields" if fields else "classification",
            out_channels=self.config.afno.out_channels if fields else 0,
            eval_batches=eval_cap(self.config),
            amp_dtype=self.amp_dtype,
            scaler=self.scaler,
            channels_last=self.config.channels_last,
            stop_check_every=self.config.stop_check_every,
        )


def eval_cap(config: TrainConfig) -> int | None:
    """Batches per rank each evaluation runs: --eval-batches, else --steps-per-epoch (a smoke test
    capped to a few steps should not evaluate a whole validation set), else all."""
    return config.eval_batches if config.eval_batches is not None else config.steps_per_epoch


def prepare(config: TrainConfig, ctx: DistContext, new_run_id: Callable[[str], str]) -> Session:
    plan = plan_batches(
        config.global_batch_size, config.local_batch_size, ctx.world_size, config.model
    )
    torch.manual_seed(config.seed)
    data = build_data(config)
    spe = count_steps(len(data.train), ctx.world_size, plan, config.steps_per_epoch)
    epochs = (
        config.epochs if config.epochs is not None else default_epochs(config.model, config.mode)
    )
    recipe = make_recipe(
        config.model,
        config.mode,
        plan.global_batch_size,
        epochs,
        spe,
        lr=config.lr,
        schedule=config.lr_schedule,
        warmup_epochs=config.warmup_epochs,
    )
    base = build_model(config, data.num_classes)
    # The model's initial weights above are the same on every rank; augmentations below differ.
    seed_augmentations(config.seed, ctx.rank)
    if config.init_checkpoint:
        _load_into(base, ckpt_io.load_weights(config.init_checkpoint), config.init_checkpoint)
    base.to(ctx.device)
    if config.channels_last:
        base.to(memory_format=torch.channels_last)
    precision_record = apply_backend_flags(config, ctx.device)
    optimizer = _optimizer(recipe, base)
    scaler, amp_dtype = _amp(config, ctx)
    signature = _signature(config, plan, spe, data.num_classes)
    start_epoch, run_id = 0, config.run_id
    resume = ckpt_io.load_latest(config.checkpoint_dir)
    if resume is not None:
        ckpt_io.check_signature(resume, signature, f"{config.checkpoint_dir}")
        if config.run_id and config.run_id != resume.run_id:
            raise CheckpointError(
                f"--run-id {config.run_id} but {config.checkpoint_dir} holds run {resume.run_id}; "
                "resume keeps the checkpoint's run id (or use a fresh --checkpoint-dir)"
            )
        if resume.epoch + 1 >= epochs:  # a session without steps would only muddle the run
            raise CheckpointError(
                f"{config.checkpoint_dir} holds run {resume.run_id} with all {epochs} epochs "
                "done: nothing to resume (ask for more --epochs, or use a fresh --checkpoint-dir)"
            )
        _load_into(base, resume.model, config.checkpoint_dir)
        optimizer.load_state_dict(resume.optimizer)
        if scaler is not None and resume.scaler:
            scaler.load_state_dict(resume.scaler)
        start_epoch, run_id = resume.epoch + 1, resume.run_id
    if run_id is None:
        run_id = ctx.broadcast_object(new_run_id(config.model) if ctx.is_main else None)
    module: nn.Module = base
    if config.model == "fourcastnet":
        module = Rollout(base, 2 if config.mode == "finetune" else 1)
    eval_model = module
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        module = nn.parallel.DistributedDataParallel(module, device_ids=ids)
    workers = config.workers
    if workers is None:
        workers = default_workers(len(os.sched_getaffinity(0)), ctx.local_world_size)
    loader_args = dict(
        world_size=ctx.world_size,
        rank=ctx.rank,
        seed=config.seed,
        workers=workers,
        pin_memory=ctx.device.type == "cuda",
    )
    train_loader = Batches(
        make_loader(data.train, plan.local_batch_size, train=True, **loader_args)
    )
    eval_loader = None
    if data.eval is not None:
        eval_loader = Batches(
            make_loader(data.eval, plan.local_batch_size, train=False, **loader_args)
        )
    run_config = _run_config(config, ctx, plan, recipe, data, base, start_epoch)
    run_config["recipe"].update(precision_record, workers=str(workers))
    return Session(
        config, ctx, plan, recipe, data, base, module, eval_model, optimizer, scaler, amp_dtype,
        train_loader, eval_loader, run_id, start_epoch, run_config, signature,
    )  # fmt: skip


def _load_into(model: nn.Module, state: dict, where: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{where}: weights do not fit this model shape ({first})") from exc


def _optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=recipe.start_lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
        )
    return torch.optim.Adam(model.parameters(), lr=recipe.peak_lr, weight_decay=recipe.weight_decay)


def _amp(config: TrainConfig, ctx: DistContext):
    policy = amp_policy(config.amp, ctx.device.type, bf16_native(ctx.device))
    scaler = torch.amp.GradScaler("cuda") if policy.grad_scaler else None
    return scaler, policy.amp_dtype


def _signature(config: TrainConfig, plan: BatchPlan, spe: int, num_classes: int) -> dict:
    shape = (
        {"image_size": config.image_size, "num_classes": num_classes}
        if config.model == "resnet50"
        else {k: v for k, v in vars(config.afno).items()}
    )
    return {
        "model": config.model,
        "mode": config.mode,
        "global_batch_size": plan.global_batch_size,
        "steps_per_epoch": spe,
        **shape,
    }


def _run_config(config, ctx, plan, recipe, data, model, start_epoch) -> dict:
    recipe_map = recipe.as_map()
    if config.model == "resnet50":
        recipe_map.update(image_size=str(config.image_size), num_classes=str(data.num_classes))
    else:
        recipe_map.update({k: str(v) for k, v in vars(config.afno).items()})
    recipe_map.update(
        data_fraction=f"{config.data_fraction:g}",
        start_epoch=str(start_epoch),
    )
    if config.init_checkpoint:
        recipe_map["init_checkpoint"] = config.init_checkpoint
    if config.eval_batches is not None:
        recipe_map["eval_batches"] = str(config.eval_batches)
    return {
        "world_size": ctx.world_size,
        "nodes": ctx.nodes,
        "local_rank": ctx.local_rank,
        "local_world_size": ctx.local_world_size,
        "global_batch_size": plan.global_batch_size,
        "local_batch_size": plan.local_batch_size,
        "accumulation_steps": plan.accumulation_steps,
        "model": config.model,
        "parameter_count": parameter_count(model),
        "dataset": data.name,
        "dataset_size": len(data.train),
        "epochs": recipe.epochs,
        "steps_per_epoch": recipe.steps_per_epoch,
        "seed": config.seed,
        "amp": config.amp,
        "backend": ctx.backend,
        "recipe": recipe_map,
        # the study report keeps fine-tuning apart from pre-training (a tag of its own wins)
        "tags": ({"mode": "finetune"} if config.mode == "finetune" else {}) | config.tags_map,
        **device_record(ctx),
        **software_record(),
    }
