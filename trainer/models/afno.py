"""FourCastNet's AFNO backbone (Pathak et al. 2022), written after the NVlabs reference
`networks/afnonet.py`: patch embedding, learned position embedding, `depth` blocks of
[LayerNorm -> AFNO2D spectral filter -> skip -> LayerNorm -> MLP (ratio 4) -> skip] ("double
skip"), and a linear head that unpatchifies to `out_chans` fields.

AFNO2D mixes tokens in Fourier space: rfft2 over the patch grid, a two-layer *block-diagonal
complex* MLP per frequency (ReLU between layers, `num_blocks` independent blocks of the channel
dimension), soft-shrinkage (`sparsity_threshold`) for sparsity, and only the lowest
`hard_thresholding_fraction` of the modes are kept, then irfft2 and a residual. The mode slice is
the reference's exactly (rows `total-kept : total+kept`, columns `:kept` with `total = H // 2 + 1`),
quirk included: with fraction 1 and W > H the highest zonal modes are dropped, as upstream.

Activation checkpointing (`checkpointing=True`, the trainer's --activation-checkpointing): in
training, each block keeps only its input and recomputes the rest in backward. At 720x1440,
depth 12, fp32 a sample's activations are about 8.5 GiB without it (bench/bench_afno_memory.py
prints the figures), so the study's LBS 4 does not fit a 40 GB card; with it they shrink to
about one block's worth plus the block inputs, for roughly a third more compute per step.

Left out on purpose: the reference's `self.norm`, defined but never used in `forward` (DDP would
need `find_unused_parameters` for it), and dropout / drop-path, which the reference sets to 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainer.config import AfnoShape


class AFNO2D(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_blocks: int = 8,
        sparsity_threshold: float = 0.01,
        hard_thresholding_fraction: float = 1.0,
        hidden_size_factor: int = 1,
    ):
        super().__init__()
        if hidden_size % num_blocks:
            raise ValueError(f"embed dim {hidden_size} is not divisible by {num_blocks} blocks")
        self.hidden_size = hidden_size
        self.sparsity_threshold = sparsity_threshold
        self.num_blocks = num_blocks
        self.block_size = hidden_size // num_blocks
        self.hard_thresholding_fraction = hard_thresholding_fraction
        self.hidden_size_factor = hidden_size_factor
        scale = 0.02
        bs, hid = self.block_size, self.block_size * hidden_size_factor
        # Index 0 holds the real part of each complex weight, index 1 the imaginary part.
        self.w1 = nn.Parameter(scale * torch.randn(2, num_blocks, bs, hid))
        self.b1 = nn.Parameter(scale * torch.randn(2, num_blocks, hid))
        self.w2 = nn.Parameter(scale * torch.randn(2, num_blocks, hid, bs))
        self.b2 = nn.Parameter(scale * torch.randn(2, num_blocks, bs))

    def kept_modes(self, h: int) -> tuple[int, int]:
        total = h // 2 + 1
        return total, int(total * self.hard_thresholding_fraction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = x
        dtype = x.dtype
        x = x.float()  # FFTs in fp32 even under AMP, as upstream
        B, H, W, C = x.shape
        x = torch.fft.rfft2(x, dim=(1, 2), norm="ortho")
        x = x.reshape(B, H, W // 2 + 1, self.num_blocks, self.block_size)
        total, kept = self.kept_modes(H)
        rows, cols = slice(total - kept, total + kept), slice(None, kept)
        xs = x[:, rows, cols]
        w1, b1, w2, b2 = self.w1, self.b1, self.w2, self.b2
        o1_real = F.relu(_mix(xs.real, w1[0]) - _mix(xs.imag, w1[1]) + b1[0])
        o1_imag = F.relu(_mix(xs.imag, w1[0]) + _mix(xs.real, w1[1]) + b1[1])
        o2_real = _mix(o1_real, w2[0]) - _mix(o1_imag, w2[1]) + b2[0]
        o2_imag = _mix(o1_imag, w2[0]) + _mix(o1_real, w2[1]) + b2[1]
        o2 = torch.zeros(*x.shape, 2, device=x.device, dtype=o2_real.dtype)
        o2[:, rows, cols] = torch.stack([o2_real, o2_imag], dim=-1)
        o2 = F.softshrink(o2, lambd=self.sparsity_threshold)
        x = torch.view_as_complex(o2).reshape(B, H, W // 2 + 1, C)
        x = torch.fft.irfft2(x, s=(H, W), dim=(1, 2), norm="ortho")
        return x.type(dtype) + bias


def _mix(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Block-diagonal matmul: x [..., blocks, in] with w [blocks, in, out]."""
    return torch.einsum("...bi,bio->...bo", x, w)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, shape: AfnoShape, double_skip: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.filter = AFNO2D(
            dim, shape.num_blocks, shape.sparsity_threshold, shape.hard_thresholding_fraction
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * shape.mlp_ratio))
        self.double_skip = double_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.filter(self.norm1(x))
        if self.double_skip:
            x = x + residual
            residual = x
        x = self.mlp(self.norm2(x))
        return x + residual


class PatchEmbed(nn.Module):
    def __init__(self, img_size: tuple[int, int], patch: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size = img_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"input is {tuple(x.shape[-2:])}, the model expects {self.img_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


class AFNONet(nn.Module):
    def __init__(self, shape: AfnoShape, checkpointing: bool = False):
        super().__init__()
        self.checkpointing = checkpointing
        p = shape.patch_size
        if shape.img_height % p or shape.img_width % p:
            raise ValueError(
                f"image {shape.img_height}x{shape.img_width} is not divisible by patch size {p}"
            )
        self.shape = shape
        self.h, self.w = shape.img_height // p, shape.img_width // p
        self.patch_embed = PatchEmbed(
            (shape.img_height, shape.img_width), p, shape.in_channels, shape.embed_dim
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, self.h * self.w, shape.embed_dim))
        self.blocks = nn.ModuleList(Block(shape.embed_dim, shape) for _ in range(shape.depth))
        self.head = nn.Linear(shape.embed_dim, shape.out_channels * p * p, bias=False)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        x = self.patch_embed(x) + self.pos_embed
        x = x.reshape(B, self.h, self.w, self.shape.embed_dim)
        recompute = self.checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        return unpatchify(self.head(x), self.shape.patch_size, self.shape.out_channels)


def unpatchify(x: torch.Tensor, p: int, c: int) -> torch.Tensor:
    """[B, h, w, (p1 p2 c)] -> [B, c, h*p, w*p]: upstream's
    `rearrange("b h w (p1 p2 c_out) -> b c_out (h p1) (w p2)")`."""
    B, h, w, _ = x.shape
    x = x.reshape(B, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, c, h * p, w * p)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)
