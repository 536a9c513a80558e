"""Device selection at start-up: a rank sees all the node's GPUs (torchrun) or exactly one
(SLURM --gpus-per-task=1, CUDA_VISIBLE_DEVICES of length one): checked with a fake torch.cuda."""

from __future__ import annotations

import pytest
import torch

from trainer.errors import ConfigError
from trainer.train.distributed import select_device


class FakeCuda:
    def __init__(self, visible: int):
        self.visible = visible
        self.current: int | None = None

    def is_available(self) -> bool:
        return self.visible > 0

    def device_count(self) -> int:
        return self.visible

    def set_device(self, device: int) -> None:
        if not 0 <= device < self.visible:
            raise RuntimeError("CUDA error: invalid device ordinal")  # as torch.cuda says
        self.current = device


@pytest.mark.parametrize(("visible", "local_rank", "index"), [(4, 0, 0), (4, 3, 3), (1, 3, 0)])
def test_a_rank_uses_its_local_rank_or_the_one_gpu_it_sees(visible, local_rank, index):
    cuda = FakeCuda(visible)
    assert select_device(cuda, local_rank) == torch.device("cuda", index)
    assert cuda.current == index


def test_no_gpu_is_the_cpu():
    cuda = FakeCuda(0)
    assert select_device(cuda, 2) == torch.device("cpu") and cuda.current is None


def test_more_local_ranks_than_visible_gpus_is_a_clear_error():
    with pytest.raises(ConfigError, match="local rank 2 but this process sees 2 GPUs"):
        select_device(FakeCuda(2), 2)
