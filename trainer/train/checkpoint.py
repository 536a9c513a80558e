"""Per-epoch checkpoints (rank 0 writes, every rank reads) and fine-tuning start weights.

A checkpoint holds the model (unwrapped from DDP), optimizer and AMP scaler state, the run id,
the last completed epoch and the global step, plus a signature of everything that fixes the step
numbering and the model's shape: resuming with a different one is refused instead of silently
continuing a different run. Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.errors import CheckpointError

FILENAME = "checkpoint.pt"


@dataclass(frozen=True)
class Checkpoint:
    run_id: str
    epoch: int  # last completed epoch (0-based)
    global_step: int  # optimizer steps done so far in the run
    model: dict
    optimizer: dict
    scaler: dict | None
    signature: dict


def save(directory: str, ckpt: Checkpoint) -> Path:
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILENAME
    tmp = folder / f".{FILENAME}.{os.getpid()}.tmp"
    torch.save(
        {
            "run_id": ckpt.run_id,
            "epoch": ckpt.epoch,
            "global_step": ckpt.global_step,
            "model": ckpt.model,
            "optimizer": ckpt.optimizer,
            "scaler": ckpt.scaler,
            "signature": ckpt.signature,
        },
        tmp,
    )
    os.replace(tmp, path)
    return path


def load_latest(directory: str | None) -> Checkpoint | None:
    if not directory:
        return None
    path = Path(directory) / FILENAME
    if not path.is_file():
        return None
    raw = _load(path)
    try:
        return Checkpoint(
            raw["run_id"],
            int(raw["epoch"]),
            int(raw["global_step"]),
            raw["model"],
            raw["optimizer"],
            raw.get("scaler"),
            raw["signature"],
        )
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a parawatt trainer checkpoint ({exc})") from exc


def check_signature(ckpt: Checkpoint, signature: dict, where: str) -> None:
    diffs = [
        f"{key}: checkpoint {ckpt.signature.get(key)!r}, now {value!r}"
        for key, value in signature.items()
        if ckpt.signature.get(key) != value
    ]
    if diffs:
        raise CheckpointError(
            f"cannot resume from {where}: the run differs from the checkpoint ({'; '.join(diffs)})"
        )


def load_weights(path: str) -> dict:
    """Model weights for --init-checkpoint: ours, NVlabs' (`model_state`), or a bare state_dict;
    a DDP `module.` prefix is stripped."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"--init-checkpoint {path}: no such file")
    raw = _load(file)
    state = raw
    if isinstance(raw, dict):
        for key in ("model", "model_state", "state_dict"):
            if isinstance(raw.get(key), dict):
                state = raw[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"--init-checkpoint {path}: holds no model state_dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and I/O errors all mean the same to the user
        # Some of torch's errors say only a number (KeyError(174812789)): name the type too.
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
