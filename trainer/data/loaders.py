"""Loaders that shard a data set over the ranks, and whose worker processes start before the run.

Workers come from a forkserver (they must not inherit the marker client's gRPC channel and
thread), and are persistent (started once per run, not once per epoch). The forkserver imports
torch and the data set's module once (`set_forkserver_preload`), so each worker is a cheap fork
instead of a fresh interpreter importing torch (2 ranks x 4 workers x (train + eval) on a 2-core
machine: 16 torch imports, ~15 s, became 2, ~3 s).

`Batches.start()` launches the workers and waits for the first batch, so that start-up is part
of the run's set-up (before RUN_START), like building the model, and epoch 0's interval holds
training and evaluation only, comparable with every other epoch. The set-up time is reported in
the run-start marker (`setup_s`) and the summary (`setup_duration_s`), not hidden. Workers leave
SIGINT / SIGTERM to the trainer (see `leave_signals_to_the_trainer`), so the trainer shuts them
down itself (`Batches.close()`) however the run ends.

Augmentations (random crops and flips) draw from torch's RNG: in a worker it is seeded from the
loader's generator, in the main process (no workers) it is the global one. Both are seeded per
rank (`augmentation_seed`), so the ranks see different crops of their samples; the sampler's
shuffle keeps the run's seed, the same on every rank, as DistributedSampler needs.
"""

from __future__ import annotations

import itertools
import multiprocessing
import signal
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    world_size: int,
    rank: int,
    seed: int,
    workers: int,
    train: bool,
    pin_memory: bool,
) -> DataLoader:
    """Training: DistributedSampler(shuffle, drop_last) so every rank runs the same step count.
    Evaluation: a plain contiguous shard, no padding (metrics are reduced as sums and counts)."""
    if train:
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
    else:
        sampler = range(rank, len(dataset), world_size)
    extra = {}
    if workers > 0:
        context = multiprocessing.get_context("forkserver")
        # Only takes effect before the forkserver starts (the first loader's first workers).
        context.set_forkserver_preload(["torch", _module_of(dataset)])
        extra = {
            "multiprocessing_context": context,
            "persistent_workers": True,
            "worker_init_fn": leave_signals_to_the_trainer,
        }
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=train,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(augmentation_seed(seed, rank)),
        **extra,
    )


def augmentation_seed(seed: int, rank: int) -> int:
    """A seed of its own for each (run seed, rank), statistically independent of the others."""
    return int(np.random.SeedSequence([seed, rank, 0xA06]).generate_state(1, np.uint64)[0] >> 1)


def seed_augmentations(seed: int, rank: int) -> None:
    """Seed the global RNG per rank: what augmentations use when there are no loader workers."""
    torch.manual_seed(augmentation_seed(seed, rank))


def leave_signals_to_the_trainer(worker_id: int) -> None:
    """Ctrl-C at a terminal (and scancel) signals every process of the group, workers too. The
    trainer stops cleanly at the next step and then shuts its workers down itself; a worker that
    died first would fail that step's remaining micro-batches instead ("interrupted" -> "failed").
    A worker still exits when the trainer does (torch's watchdog on the parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _module_of(dataset: Dataset) -> str:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return type(dataset).__module__


class Batches:
    """A loader's batches epoch by epoch, its workers optionally started ahead of the first."""

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self._early: tuple[int, Iterator] | None = None

    @property
    def sampler(self):
        return self.loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def start(self, epoch: int = 0) -> None:
        """Start the worker processes now and wait for `epoch`'s first batch, which the first
        `iterate(epoch)` then yields; without workers there is nothing to start."""
        if self.loader.num_workers == 0:
            return
        batches = self._fresh(epoch)
        first = next(batches, None)
        self._early = (epoch, batches if first is None else itertools.chain([first], batches))

    def iterate(self, epoch: int = 0) -> Iterator:
        early, self._early = self._early, None
        if early is not None and early[0] == epoch:
            return early[1]
        return self._fresh(epoch)

    def close(self) -> None:
        """Shut the worker processes down now; idempotent, nothing to do without workers.
        Persistent workers otherwise live as long as the loader, and after an exception its
        traceback keeps the loader alive until multiprocessing's exit handler joins them: it
        asks them to stop with SIGTERM, which they ignore (see leave_signals_to_the_trainer), so
        the process would hang at exit."""
        self._early = None
        iterator, self.loader._iterator = getattr(self.loader, "_iterator", None), None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def _fresh(self, epoch: int) -> Iterator:
        if hasattr(self.loader.sampler, "set_epoch"):
            self.loader.sampler.set_epoch(epoch)
        return iter(self.loader)
