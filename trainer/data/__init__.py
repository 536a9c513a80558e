"""Data sets for a configuration, and the loaders that shard them over the ranks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset, Subset

from trainer.config import TrainConfig
from trainer.data.loaders import Batches, make_loader, seed_augmentations
from trainer.errors import ConfigError

__all__ = ["Batches", "DataBundle", "build_data", "make_loader", "seed_augmentations"]

# Defaults mirror the study's data sets: ImageNet-1k (1,281,167 training images) and ERA5
# 1979-2015 at 6-hour steps (37 x 1460 samples).
SYNTHETIC_SIZE = {"resnet50": 1_281_167, "fourcastnet": 37 * 1460}
SYNTHETIC_EVAL_FRACTION = 25


@dataclass(frozen=True)
class DataBundle:
    train: Dataset
    eval: Dataset | None
    name: str  # for RunConfig.dataset
    num_classes: int  # 0 for fields
    climatology: np.ndarray | None = None  # [C, H, W] normalised, for ACC
    stds: np.ndarray | None = None  # [C], to report RMSE in physical units


def build_data(config: TrainConfig) -> DataBundle:
    bundle = _images(config) if config.model == "resnet50" else _fields(config)
    if not 0.0 < config.data_fraction <= 1.0:
        raise ConfigError(f"--data-fraction must be in (0, 1], got {config.data_fraction}")
    if config.data_fraction < 1.0:
        n = max(1, math.ceil(config.data_fraction * len(bundle.train)))
        bundle = DataBundle(
            Subset(bundle.train, range(n)),
            bundle.eval,
            f"{bundle.name}[:{config.data_fraction:g}]",
            bundle.num_classes,
            bundle.climatology,
            bundle.stds,
        )
    return bundle


def _synthetic_sizes(config: TrainConfig) -> tuple[int, int]:
    size = config.synthetic_size or SYNTHETIC_SIZE[config.model]
    if size < 1:
        raise ConfigError(f"--synthetic-size must be >= 1, got {size}")
    return size, max(1, size // SYNTHETIC_EVAL_FRACTION)


def _images(config: TrainConfig) -> DataBundle:
    from trainer.data.images import SyntheticImages, image_folders

    if config.synthetic:
        classes = config.num_classes or 1000
        size, eval_size = _synthetic_sizes(config)
        train = SyntheticImages(size, classes, config.image_size, config.seed, split=0)
        val = SyntheticImages(eval_size, classes, config.image_size, config.seed, split=1)
        return DataBundle(train, val, "synthetic-images", classes)
    train, val, classes = image_folders(config.data, config.image_size)
    if config.num_classes not in (None, classes):
        raise ConfigError(
            f"--num-classes {config.num_classes} but {config.data} has {classes} class folders"
        )
    return DataBundle(train, val, f"imagefolder:{config.data}", classes)


def _fields(config: TrainConfig) -> DataBundle:
    from trainer.data.fields import SyntheticFields, era5_fields

    shape = config.afno
    n_future = 2 if config.mode == "finetune" else 1
    if n_future == 2 and shape.in_channels != shape.out_channels:
        raise ConfigError(
            "--mode finetune feeds the model its own output: --in-channels must equal "
            "--out-channels"
        )
    if config.synthetic:
        size, eval_size = _synthetic_sizes(config)
        train = SyntheticFields(size, shape, n_future, config.seed, split=0)
        val = SyntheticFields(eval_size, shape, n_future, config.seed, split=1)
        return DataBundle(train, val, "synthetic-fields", 0)
    train, val, clim, stds = era5_fields(config.data, shape, n_future)
    return DataBundle(train, val, f"era5-hdf5:{config.data}", 0, clim, stds)
