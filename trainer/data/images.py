"""Image classification data for ResNet50: a learnable synthetic set, or an ImageFolder tree.

The synthetic set is deterministic per (seed, split, index) and learnable: every class has its own
oriented stripe pattern (frequency, angle, colour), drawn at a random phase and buried in noise, so
accuracy really moves with training instead of sitting at chance.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from trainer.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SIGNAL = 1.0
_NOISE = 1.0


class SyntheticImages(Dataset):
    def __init__(self, size: int, num_classes: int, image_size: int, seed: int, split: int):
        self.size, self.num_classes, self.image_size = size, num_classes, image_size
        self.seed, self.split = seed, split
        rng = np.random.default_rng([seed, 7])  # class structure shared by every split
        self.freq = rng.uniform(1.0, 6.0, num_classes)
        self.angle = rng.uniform(0.0, math.pi, num_classes)
        color = rng.normal(0.0, 1.0, (num_classes, 3))
        self.color = color / np.linalg.norm(color, axis=1, keepdims=True) * math.sqrt(3)
        coords = np.arange(image_size, dtype=np.float64) / image_size
        self.y, self.x = np.meshgrid(coords, coords, indexing="ij")

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.split, index])
        label = int(rng.integers(self.num_classes))
        phase = rng.uniform(0.0, 2 * math.pi)
        a, f = self.angle[label], self.freq[label]
        pattern = np.sin(2 * math.pi * f * (self.x * math.cos(a) + self.y * math.sin(a)) + phase)
        s = self.image_size
        image = _SIGNAL * self.color[label][:, None, None] * pattern[None]
        image += _NOISE * rng.standard_normal((3, s, s))
        return torch.from_numpy(image.astype(np.float32)), label


def image_folders(root: str, image_size: int) -> tuple[Dataset, Dataset | None, int]:
    """ImageNet layout: ROOT/train/<class>/* and ROOT/val/<class>/* (ROOT alone: train only)."""
    from torchvision import datasets, transforms

    base = Path(root)
    if not base.is_dir():
        raise DataError(f"--data {root}: no such directory (or use --data synthetic)")
    train_dir = base / "train" if (base / "train").is_dir() else base
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    eval_tf = transforms.Compose(
        [
            transforms.Resize(round(image_size * 256 / 224)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            normalize,
        ]
    )
    try:
        train = datasets.ImageFolder(str(train_dir), transform=train_tf)
        val = None
        if (base / "val").is_dir():
            val = datasets.ImageFolder(str(base / "val"), transform=eval_tf)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"--data {root}: not an ImageFolder tree ({exc})") from exc
    if val is not None and val.classes != train.classes:
        raise DataError(f"--data {root}: train/ and val/ hold different class folders")
    return train, val, len(train.classes)
