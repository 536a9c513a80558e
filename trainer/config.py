"""The trainer's configuration: one frozen dataclass, built by the CLI (or a test) from flags.

`None` means "the recipe's default" (see `recipes.py`), so the recipe stays the single place that
knows the study's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parawatt_proto.limits import run_id_problem, tag_problem

MODELS = ("resnet50", "fourcastnet")
MODES = ("pretrain", "finetune")
SCHEDULES = ("step", "cosine")
DEFAULT_DAEMON = "127.0.0.1:50051"


@dataclass(frozen=True)
class AfnoShape:
    """FourCastNet's AFNO backbone; the defaults are the NVlabs full-size model on ERA5."""

    img_height: int = 720
    img_width: int = 1440
    in_channels: int = 20
    out_channels: int = 20
    patch_size: int = 8
    embed_dim: int = 768
    depth: int = 12
    num_blocks: int = 8
    sparsity_threshold: float = 0.01
    hard_thresholding_fraction: float = 1.0
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class TrainConfig:
    model: str = "resnet50"
    data: str = "synthetic"  # "synthetic" or a directory (ImageFolder / FourCastNet HDF5 layout)
    epochs: int | None = None
    steps_per_epoch: int | None = None  # cap on optimizer steps per epoch (short runs)
    global_batch_size: int | None = None  # None: LBS x world size (no accumulation)
    local_batch_size: int | None = None
    lr: float | None = None  # peak LR; None: the recipe's
    lr_schedule: str | None = None  # step | cosine; None: the recipe's
    warmup_epochs: float | None = None
    image_size: int = 224
    num_classes: int | None = None
    afno: AfnoShape = field(default_factory=AfnoShape)
    mode: str = "pretrain"
    init_checkpoint: str | None = None
    workers: int = 4
    seed: int = 0
    amp: bool = False
    daemon: str | None = DEFAULT_DAEMON  # None: markers off
    run_id: str | None = None
    checkpoint_dir: str | None = None
    output: str | None = None
    eval_batches: int | None = None
    tags: tuple[tuple[str, str], ...] = ()
    data_fraction: float = 1.0
    synthetic_size: int | None = None
    progress: bool = True  # rank 0 progress bar / lines

    @property
    def synthetic(self) -> bool:
        return self.data == "synthetic"

    @property
    def tags_map(self) -> dict[str, str]:
        return dict(self.tags)


def parse_tag(text: str) -> tuple[str, str]:
    """`KEY=VALUE` -> (key, value); raises ValueError with a message for the CLI."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    if reason := tag_problem(key.strip(), value):
        raise ValueError(reason)
    return key.strip(), value


def parse_run_id(text: str | None) -> str | None:
    """`--run-id`: within the limits every part of parawatt shares; raises ValueError."""
    if text is not None and (reason := run_id_problem(text)):
        raise ValueError(f"run id {text[:40]!r} {reason}")
    return text


def parse_daemon(text: str) -> str | None:
    """`HOST:PORT` or `none` (markers off) -> address or None; raises ValueError."""
    if text.strip().lower() in ("none", "off", ""):
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT or 'none', got {text!r}")
    return text.strip()
