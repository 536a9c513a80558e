"""The trainer's configuration: one frozen dataclass, built by the CLI (or a test) from flags.

`None` means "the recipe's default" (see `train/recipes.py`), so the recipe stays the single place that
knows the study's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parawatt_proto.limits import run_id_problem, tag_problem
from parawatt_proto.transport import AddressError, ClientTLS, TLSConfigError, parse_target

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
    workers: int | None = None  # None: the CPUs per local GPU (default_workers)
    seed: int = 0
    amp: bool = False
    tf32: bool = True  # TF32 matmuls and convolutions on Ampere and newer
    cudnn_benchmark: bool = True
    channels_last: bool = False
    activation_checkpointing: bool = False  # FourCastNet: recompute each block in backward
    stop_check_every: int = 10  # steps between the ranks' stop votes (see StopAgreement)
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


MAX_DEFAULT_WORKERS = 16


def default_workers(cpus: int, local_world_size: int) -> int:
    """Loader workers per rank: the CPUs this process may use shared out over the node's local
    ranks (torchrun starts them all with one affinity mask), at most MAX_DEFAULT_WORKERS."""
    return max(0, min(MAX_DEFAULT_WORKERS, cpus // max(1, local_world_size)))


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
    """`HOST:PORT`, `unix:PATH` or `none` (markers off) -> address or None; raises ValueError."""
    if text.strip().lower() in ("none", "off", ""):
        return None
    try:
        target = parse_target(text.strip())
    except AddressError as e:
        raise ValueError(f"expected HOST:PORT or 'none' or unix:PATH ({e})") from None
    try:  # checked now, not when the marker client starts in the middle of a run
        tls = None if target.is_unix else ClientTLS.from_env()
        if tls is not None:
            tls.credentials()
    except TLSConfigError as e:
        raise ValueError(f"{e} (from the PARAWATT_TLS_* environment)") from None
    return target.address
