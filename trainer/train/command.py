"""The `trainer train` command: its flags, their checks, and the call into trainer.train.run.

Shared by the CLI (trainer/cli.py registers it) and the sweep runner (trainer/sweep/command.py reads its
flag names to catch typos in a grid), so neither imports the other.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from parawatt_proto.cli_args import FiniteFloat
from trainer.config import (
    DEFAULT_DAEMON,
    MODELS,
    MODES,
    SCHEDULES,
    AfnoShape,
    TrainConfig,
    parse_daemon,
    parse_run_id,
    parse_tag,
)

_POS = click.IntRange(min=1)


def _tags(ctx, param, values):
    try:
        return tuple(parse_tag(v) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _run_id(ctx, param, value):
    try:
        return parse_run_id(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _daemon(ctx, param, value):
    try:
        return parse_daemon(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _afno_options(fn):
    shape = AfnoShape()
    options = [
        click.option("--img-height", type=_POS, default=shape.img_height, show_default=True),
        click.option("--img-width", type=_POS, default=shape.img_width, show_default=True),
        click.option("--in-channels", type=_POS, default=shape.in_channels, show_default=True),
        click.option("--out-channels", type=_POS, default=shape.out_channels, show_default=True),
        click.option("--patch-size", type=_POS, default=shape.patch_size, show_default=True),
        click.option("--embed-dim", type=_POS, default=shape.embed_dim, show_default=True),
        click.option("--depth", type=_POS, default=shape.depth, show_default=True),
        click.option("--num-blocks", type=_POS, default=shape.num_blocks, show_default=True),
        click.option(
            "--sparsity-threshold",
            type=FiniteFloat(min=0),
            default=shape.sparsity_threshold,
            show_default=True,
        ),
        click.option(
            "--hard-thresholding-fraction",
            type=FiniteFloat(0, 1, min_open=True),
            default=shape.hard_thresholding_fraction,
            show_default=True,
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.command()
@click.option("--model", type=click.Choice(MODELS), default="resnet50", show_default=True)
@click.option("--data", default="synthetic", show_default=True, help="'synthetic' or a directory")
@click.option("--epochs", type=_POS, default=None, help="default: the recipe's (90 / 80 / 50)")
@click.option("--steps-per-epoch", type=_POS, default=None, help="cap on optimizer steps")
@click.option("--global-batch-size", type=_POS, default=None, help="default: LBS x world size")
@click.option("--local-batch-size", type=_POS, default=None, help="per-device micro-batch")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=None, help="peak LR")
@click.option("--lr-schedule", type=click.Choice(SCHEDULES), default=None)
@click.option("--warmup-epochs", type=FiniteFloat(min=0), default=None)
@click.option("--image-size", type=_POS, default=224, show_default=True)
@click.option("--num-classes", type=_POS, default=None, help="default 1000 / the class folders")
@_afno_options
@click.option("--mode", type=click.Choice(MODES), default="pretrain", show_default=True)
@click.option("--init-checkpoint", default=None, help="weights to start fine-tuning from")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="loader workers per rank [default: the CPUs per local GPU, at most 16]",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--amp",
    is_flag=True,
    help="mixed precision: bf16 where the GPU has it natively, else fp16 + GradScaler",
)
@click.option(
    "--tf32/--no-tf32",
    default=True,
    show_default=True,
    help="TF32 matmuls and convolutions (Ampere and newer)",
)
@click.option(
    "--cudnn-benchmark/--no-cudnn-benchmark",
    default=True,
    show_default=True,
    help="let cuDNN pick the fastest convolution algorithms",
)
@click.option("--channels-last", is_flag=True, help="ResNet50 in channels-last memory format")
@click.option(
    "--activation-checkpointing",
    is_flag=True,
    help="FourCastNet: recompute each block's activations in backward (less memory)",
)
@click.option(
    "--stop-check-every",
    type=_POS,
    default=10,
    show_default=True,
    help="steps between the ranks' stop votes (Ctrl-C / SIGTERM stops all ranks "
    "at the same step within 2x this)",
)
@click.option("--daemon", default=DEFAULT_DAEMON, show_default=True, callback=_daemon,
              help="HOST:PORT of the node's power daemon, or 'none'")  # fmt: skip
@click.option(
    "--run-id",
    default=None,
    callback=_run_id,
    help="default: rank 0 makes one (or the checkpoint's)",
)
@click.option("--checkpoint-dir", default=None, help="save each epoch; resume from here")
@click.option("--output", default=None, help="write the JSON summary here (rank 0)")
@click.option("--eval-batches", type=click.IntRange(min=0), default=None,
              help="per rank; default: all, or --steps-per-epoch when given")  # fmt: skip
@click.option("--tag", "tags", multiple=True, callback=_tags, help="KEY=VALUE (repeatable)")
@click.option("--data-fraction", type=FiniteFloat(0, 1, min_open=True), default=1.0)
@click.option("--synthetic-size", type=_POS, default=None, help="synthetic training-set size")
@click.option("--quiet", is_flag=True, help="no progress or summary table")
def train(**opts) -> None:
    """Train one model data-parallel; every rank marks its boundaries to the daemon."""
    config = _config(opts)
    _check(config)
    from trainer.errors import ConfigError, TrainerError
    from trainer.train.distributed import world_size_from_env

    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.WARNING, format=f"[rank {rank}] %(levelname)s %(message)s")
    try:
        from trainer.train.recipes import plan_batches

        plan_batches(config.global_batch_size, config.local_batch_size, world_size_from_env(),
                     config.model)  # fmt: skip
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    from trainer.train.run import train as run_training

    try:
        outcome = run_training(config)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except TrainerError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    if outcome.status == "interrupted":
        sys.exit(128 + (outcome.signum or 2))
    if outcome.status != "completed":
        sys.exit(1)


def _config(opts: dict) -> TrainConfig:
    afno_keys = AfnoShape.__dataclass_fields__.keys() - {"mlp_ratio"}
    afno = AfnoShape(**{k: opts.pop(k) for k in afno_keys})
    quiet = opts.pop("quiet")
    return TrainConfig(afno=afno, progress=not quiet, **opts)


def _check(config: TrainConfig) -> None:
    if config.mode == "finetune" and config.model != "fourcastnet":
        raise click.UsageError("--mode finetune is FourCastNet's two-step fine-tuning")
    a = config.afno
    if config.model == "fourcastnet":
        if a.img_height % a.patch_size or a.img_width % a.patch_size:
            raise click.UsageError(
                f"--img-height {a.img_height} / --img-width {a.img_width} must be multiples of "
                f"--patch-size {a.patch_size}"
            )
        if a.embed_dim % a.num_blocks:
            raise click.UsageError(
                f"--embed-dim {a.embed_dim} must be a multiple of --num-blocks {a.num_blocks}"
            )
    if config.activation_checkpointing and config.model != "fourcastnet":
        raise click.UsageError("--activation-checkpointing is for --model fourcastnet")
    if config.channels_last and config.model != "resnet50":
        raise click.UsageError("--channels-last is for --model resnet50")
    if config.output and (reason := _output_problem(Path(config.output))):
        raise click.UsageError(f"--output {config.output}: {reason}")
    if config.init_checkpoint and not Path(config.init_checkpoint).is_file():
        raise click.UsageError(f"--init-checkpoint {config.init_checkpoint}: no such file")
    if config.mode == "finetune" and not config.init_checkpoint:
        # Legitimate for an energy-only sweep (cost does not depend on the weights), but a
        # researcher expecting the study's fine-tuning accuracy should know.
        click.echo(
            "warning: --mode finetune without --init-checkpoint fine-tunes random weights",
            err=True,
        )
    if config.data != "synthetic" and not Path(config.data).is_dir():
        raise click.UsageError(f"--data {config.data}: no such directory (or 'synthetic')")


def _output_problem(path: Path) -> str | None:
    """Why the summary could not be written to `path` (None: it can), checked before training:
    otherwise a run of hours ends in an error and no summary."""
    folder = path.resolve().parent
    if not folder.is_dir():
        return "its directory does not exist"
    if path.is_dir():
        return "is a directory; give a file name for the JSON summary"
    if path.exists() and not os.access(path, os.W_OK):
        return "is not writable"
    if not path.exists() and not os.access(folder, os.W_OK | os.X_OK):
        return f"its directory {folder} is not writable"
    return None
