"""FourCastNet (AFNO) activation memory per sample, measured on the CPU, and the local batch
sizes (LBS) that can fit a GPU, with and without activation checkpointing.

What backward needs is the set of tensors autograd saves in forward; a saved-tensors hook adds
them up (storages counted once). Memory is linear in the token count and in the depth, so the
full 720x1440 / depth-12 figure is extrapolated from two small grids at full width (embed 768):
    bytes(tokens, depth) = fixed(tokens) + depth x per_block(tokens), each linear in tokens
Model state (weights, gradients, Adam's two moments: 4 x 4 bytes per parameter) is added for the
LBS table. Peak memory on a GPU is higher still (temporaries in backward, cuDNN/cuFFT workspace,
allocator fragmentation, NCCL buffers), so the table gives upper bounds: a point above them does
not fit; one below should be confirmed on the card (scripts/gpu_check.sh prints peak memory).

Usage: python bench/bench_afno_memory.py
"""

from __future__ import annotations

import dataclasses

import torch

from trainer.config import AfnoShape
from trainer.models.afno import AFNONet

GIB = 2**30
CARDS_GIB = {"A100-40GB": 40, "A100-80GB / H100-80GB": 80, "H200": 141}
SMALL = ((96, 192), (192, 384))  # 288 and 1152 of the full grid's 16,200 tokens


def saved_bytes(shape: AfnoShape, checkpointing: bool) -> int:
    model = AFNONet(shape, checkpointing=checkpointing).train()
    x = torch.randn(1, shape.in_channels, shape.img_height, shape.img_width)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return sum(seen.values())


def per_sample(full: AfnoShape, checkpointing: bool) -> tuple[float, float]:
    """(bytes per sample at the full grid, bytes of one block's activations there).

    Measured at depth 1 and 2 on two small grids, so that what grows with tokens and what does
    not (weights that autograd saves, e.g. the MLP's) are told apart."""

    def measure(depth: int, grid: tuple[int, int], ckpt: bool) -> float:
        return saved_bytes(
            dataclasses.replace(full, img_height=grid[0], img_width=grid[1], depth=depth), ckpt
        )

    def tokens(grid: tuple[int, int]) -> int:
        return (grid[0] // full.patch_size) * (grid[1] // full.patch_size)

    def at_full(f) -> float:  # linear in tokens through the two small grids
        lo, hi = f(SMALL[0]), f(SMALL[1])
        slope = (hi - lo) / (tokens(SMALL[1]) - tokens(SMALL[0]))
        return lo + slope * (tokens((full.img_height, full.img_width)) - tokens(SMALL[0]))

    def block(g, ckpt=checkpointing):
        return measure(2, g, ckpt) - measure(1, g, ckpt)

    fixed = at_full(lambda g: measure(1, g, checkpointing) - block(g))
    return fixed + full.depth * at_full(block), at_full(lambda g: block(g, False))


def main() -> None:
    torch.manual_seed(0)
    full = AfnoShape()
    params = sum(p.numel() for p in AFNONet(dataclasses.replace(full, depth=1)).parameters())
    per_block = (
        sum(p.numel() for p in AFNONet(dataclasses.replace(full, depth=2)).parameters()) - params
    )
    params += (full.depth - 1) * per_block
    state = 16 * params
    plain, _ = per_sample(full, False)
    ckpt, block = per_sample(full, True)
    ckpt_peak = ckpt + block  # one block is recomputed, its activations live, during backward
    print(f"AFNO {full.img_height}x{full.img_width}, depth {full.depth}, embed {full.embed_dim}, "
          f"fp32: {params / 1e6:.1f} M parameters, model + Adam state {state / GIB:.2f} GiB")  # fmt: skip
    print(f"saved activations per sample: {plain / GIB:.2f} GiB without checkpointing, "
          f"{ckpt_peak / GIB:.2f} GiB with it (block inputs {ckpt / GIB:.2f} + one block "
          f"{block / GIB:.2f})")  # fmt: skip
    print("upper bound on LBS per GPU (activations + model state only):")
    for card, gib in CARDS_GIB.items():
        free = gib * GIB - state
        print(f"  {card:>22}: {int(free // plain):3d} without, "
              f"{int((free - block) // ckpt):3d} with activation checkpointing")  # fmt: skip


if __name__ == "__main__":
    main()
