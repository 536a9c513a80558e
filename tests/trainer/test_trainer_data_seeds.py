"""Data loading across ranks: each rank its own augmentations, loader workers sized to the
CPUs per GPU, and evaluation metrics accumulated without a host sync per batch."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import Dataset

from trainer.config import MAX_DEFAULT_WORKERS, default_workers
from trainer.data import make_loader, seed_augmentations
from trainer.train import metrics as M


class Augmented(Dataset):
    """Sample i is i plus an "augmentation" drawn from torch's RNG, like a random crop."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int):
        return torch.rand(2), i


def _draws(rank: int, workers: int, seed: int = 0) -> tuple[list[int], torch.Tensor]:
    seed_augmentations(seed, rank)
    loader = make_loader(Augmented(), 4, world_size=2, rank=rank, seed=seed, workers=workers,
                         train=True, pin_memory=False)  # fmt: skip
    loader.sampler.set_epoch(0)
    xs, idx = zip(*[(x, i) for x, i in loader], strict=True)
    return torch.cat(idx).tolist(), torch.cat(xs)


def test_ranks_draw_different_augmentations_and_each_rank_is_reproducible():
    for workers in (0, 1):  # main process (global RNG) and worker processes (loader generator)
        idx0, aug0 = _draws(0, workers)
        idx1, aug1 = _draws(1, workers)
        assert sorted(idx0 + idx1) == list(range(16))  # the sampler still shards the data
        assert not torch.equal(aug0, aug1), f"ranks share augmentations with {workers} workers"
        assert torch.equal(_draws(0, workers)[1], aug0)
        assert not torch.equal(_draws(0, workers, seed=1)[1], aug0)


def test_loader_workers_default_to_the_cpus_per_local_gpu():
    assert default_workers(cpus=64, local_world_size=4) == 16
    assert default_workers(cpus=32, local_world_size=8) == 4
    assert default_workers(cpus=2, local_world_size=4) == 0  # fewer CPUs than GPUs
    assert default_workers(cpus=256, local_world_size=1) == MAX_DEFAULT_WORKERS


class HostSyncs(TorchDispatchMode):
    """Ops that move data between Python and tensors: `.item()` / `float(t)`
    (_local_scalar_dense, a device-to-host sync on a GPU) and `torch.tensor(...)` from Python
    values (lift_fresh, a blocking host-to-device copy on a GPU)."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if "_local_scalar_dense" in name or "lift_fresh" in name:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def test_evaluation_batches_accumulate_without_host_syncs():
    sums_c, sums_f = M.EvalSums.classification(), M.EvalSums.fields(3)
    logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    pred, target, clim = torch.randn(4, 3, 8, 16), torch.randn(4, 3, 8, 16), torch.randn(3, 8, 16)
    loss = M.relative_l2(pred, target)
    with HostSyncs() as mode:
        for _ in range(3):
            M.classification_batch(sums_c, logits, labels)
            M.fields_batch(sums_f, pred, target, loss, clim)
    assert mode.seen == []
    result = M.classification_result(sums_c.reduce(lambda t: t))
    assert sums_c.sums["count"].item() == 24 and 0 <= result["eval_top1"] <= 1
    assert sums_f.sums["count"].item() == 12
