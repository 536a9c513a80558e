"""FourCastNet's AFNO backbone: shapes, and the spectral filter against an independent NumPy
formulation (complex block-diagonal MLP on rfft2 modes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.config import AfnoShape
from trainer.models import Rollout
from trainer.models.afno import AFNO2D, AFNONet, unpatchify

TINY = AfnoShape(img_height=16, img_width=32, in_channels=3, out_channels=2, patch_size=4,
                 embed_dim=32, depth=2, num_blocks=4)  # fmt: skip


def test_defaults_are_the_full_size_reference_model():
    s = AfnoShape()
    assert (s.img_height, s.img_width, s.in_channels, s.out_channels) == (720, 1440, 20, 20)
    assert (s.patch_size, s.embed_dim, s.depth, s.num_blocks) == (8, 768, 12, 8)
    assert (s.sparsity_threshold, s.hard_thresholding_fraction, s.mlp_ratio) == (0.01, 1.0, 4.0)


def test_shapes_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = AFNONet(TINY)
    x = torch.randn(3, 3, 16, 32)
    y = model(x)
    assert y.shape == (3, 2, 16, 32)
    y.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP needs no unused parameters
    block = model.blocks[0]
    assert block.mlp.fc1.out_features == 4 * 32  # MLP ratio 4
    assert block.filter.w1.shape == (2, 4, 8, 8)  # (re/im, blocks, block size, block size)
    with pytest.raises(ValueError, match="model expects"):
        model(torch.randn(1, 3, 16, 16))


def test_rollout_feeds_the_model_its_own_output():
    torch.manual_seed(0)
    model = AFNONet(AfnoShape(**{**vars(TINY), "out_channels": 3}))
    x = torch.randn(2, 3, 16, 32)
    out = Rollout(model, 2)(x)
    first = model(x)
    assert out.shape == (2, 6, 16, 32)
    torch.testing.assert_close(out[:, :3], first)
    torch.testing.assert_close(out[:, 3:], model(first))


def test_unpatchify_matches_the_reference_rearrange():
    B, h, w, p, c = 2, 3, 4, 2, 5
    x = torch.arange(B * h * w * p * p * c, dtype=torch.float32).reshape(B, h, w, p * p * c)
    out = unpatchify(x, p, c)
    for b, i, j, p1, p2, k in np.ndindex(B, h, w, p, p, c):
        assert out[b, k, i * p + p1, j * p + p2] == x[b, i, j, (p1 * p + p2) * c + k]


def _numpy_filter(x: np.ndarray, f: AFNO2D) -> np.ndarray:
    """The same operator written with complex weights: W = w[0] + i w[1]."""
    B, H, W, C = x.shape
    nb, bs = f.num_blocks, f.block_size
    w1 = f.w1[0].detach().double().numpy() + 1j * f.w1[1].detach().double().numpy()
    b1 = f.b1[0].detach().double().numpy() + 1j * f.b1[1].detach().double().numpy()
    w2 = f.w2[0].detach().double().numpy() + 1j * f.w2[1].detach().double().numpy()
    b2 = f.b2[0].detach().double().numpy() + 1j * f.b2[1].detach().double().numpy()
    X = np.fft.rfft2(x, axes=(1, 2), norm="ortho").reshape(B, H, W // 2 + 1, nb, bs)
    total = H // 2 + 1
    kept = int(total * f.hard_thresholding_fraction)
    out = np.zeros_like(X)
    for r in range(max(0, total - kept), min(H, total + kept)):
        for c in range(min(kept, W // 2 + 1)):
            for b in range(nb):
                z = X[:, r, c, b] @ w1[b] + b1[b]
                z = np.maximum(z.real, 0) + 1j * np.maximum(z.imag, 0)
                out[:, r, c, b] = z @ w2[b] + b2[b]
    lam = f.sparsity_threshold
    shrink = lambda v: np.sign(v) * np.maximum(np.abs(v) - lam, 0)  # noqa: E731
    out = shrink(out.real) + 1j * shrink(out.imag)
    y = np.fft.irfft2(out.reshape(B, H, W // 2 + 1, C), s=(H, W), axes=(1, 2), norm="ortho")
    return y + x


@pytest.mark.parametrize(
    ("h", "w", "fraction", "threshold"),
    [(6, 8, 1.0, 0.01), (7, 10, 1.0, 0.0), (8, 12, 0.5, 0.02), (9, 4, 1.0, 0.01)],
)
def test_spectral_filter_matches_the_complex_block_mlp(h, w, fraction, threshold):
    torch.manual_seed(1)
    f = AFNO2D(8, num_blocks=2, sparsity_threshold=threshold, hard_thresholding_fraction=fraction)
    with torch.no_grad():  # weights large enough that ReLU and soft-shrink both bite
        for p in f.parameters():
            p.mul_(20)
    x = torch.randn(2, h, w, 8, dtype=torch.float32)
    got = f(x).detach().double().numpy()
    np.testing.assert_allclose(got, _numpy_filter(x.double().numpy(), f), atol=2e-5)


def test_identity_weights_pass_positive_spectral_parts_and_zero_weights_leave_the_residual():
    f = AFNO2D(4, num_blocks=1, sparsity_threshold=0.0)
    eye = torch.eye(4)
    with torch.no_grad():
        for p in f.parameters():
            p.zero_()
        f.w1[0].copy_(eye)
        f.w2[0].copy_(eye)
    x = torch.randn(1, 6, 8, 4)
    X = np.fft.rfft2(x.numpy().astype(np.float64), axes=(1, 2), norm="ortho")
    Y = np.maximum(X.real, 0) + 1j * np.maximum(X.imag, 0)
    Y[:, :, 6 // 2 + 1 :] = 0  # the reference keeps the first H // 2 + 1 zonal modes only
    expected = np.fft.irfft2(Y, s=(6, 8), axes=(1, 2), norm="ortho") + x.numpy()
    np.testing.assert_allclose(f(x).detach().numpy(), expected, atol=1e-5)
    with torch.no_grad():
        f.w1.zero_()
        f.w2.zero_()
    torch.testing.assert_close(f(x), x)
