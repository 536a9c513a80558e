"""Tiny CPU configurations shared by the trainer tests (flags of `trainer train`)."""

from __future__ import annotations

import json
from pathlib import Path

AFNO = [
    "--model", "fourcastnet", "--img-height", "16", "--img-width", "32", "--in-channels", "3",
    "--out-channels", "3", "--patch-size", "4", "--embed-dim", "32", "--depth", "2",
    "--num-blocks", "4", "--synthetic-size", "128", "--workers", "0", "--eval-batches", "2",
]  # fmt: skip
RESNET = [
    "--model", "resnet50", "--image-size", "32", "--num-classes", "10", "--synthetic-size", "128",
    "--workers", "0", "--eval-batches", "2",
]  # fmt: skip


def short(epochs: int = 2, steps: int = 3) -> list[str]:
    return ["--epochs", str(epochs), "--steps-per-epoch", str(steps)]


def load_summary(path: Path) -> dict:
    return json.loads(Path(path).read_text())
