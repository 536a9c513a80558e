"""Losses and evaluation metrics, and their reduction as sums and counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.train import metrics as M


def test_latitude_weights_follow_fourcastnet():
    w = M.lat_weights(721)
    lat = 90 - np.arange(721) * 180 / 720
    ref = 721 * np.cos(np.radians(lat)) / np.cos(np.radians(lat)).sum()
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-6)
    assert w.sum().item() == pytest.approx(721, rel=1e-5)
    assert w[0].item() == pytest.approx(0, abs=1e-6) and w[360].item() == w.max().item()


def test_weighted_rmse_and_acc():
    target = torch.randn(2, 3, 8, 16)
    assert torch.allclose(M.weighted_rmse_channels(target + 0.5, target), torch.full((2, 3), 0.5))
    torch.testing.assert_close(M.weighted_acc_channels(target, target), torch.ones(2, 3))
    torch.testing.assert_close(M.weighted_acc_channels(-2 * target, target), -torch.ones(2, 3))
    # The weights matter: an error only at the pole row counts (almost) nothing.
    pred = target.clone()
    pred[..., 0, :] += 10.0
    assert M.weighted_rmse_channels(pred, target).max() < 1e-2


def test_relative_l2_is_the_mean_over_samples_of_the_relative_norm():
    target = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    pred = torch.tensor([[3.0, 4.0 + 5.0], [0.0, 0.0]])
    assert M.relative_l2(pred, target).item() == pytest.approx((1.0 + 1.0) / 2)


def test_topk_counts_and_small_class_counts():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    target = torch.tensor([1, 2, 0])
    assert M.topk_correct(logits, target).tolist() == [1.0, 3.0]  # top-5 of 3 classes: all


def test_eval_sums_reduce_across_ranks_as_sums_and_counts():
    ranks = []
    for n in (3, 1):  # uneven shards, as the evaluation split gives them
        sums = M.EvalSums.classification()
        logits = torch.eye(4)[:n] * 5
        M.classification_batch(sums, logits, torch.arange(n))
        ranks.append(sums)

    def fake_all_reduce(t: torch.Tensor) -> torch.Tensor:  # rank 0's view of a 2-rank SUM
        return t + torch.cat([ranks[1].sums[k].reshape(-1) for k in sorted(ranks[1].sums)])

    result = M.classification_result(ranks[0].reduce(fake_all_reduce))
    assert result["eval_top1"] == 1.0 and result["eval_top5"] == 1.0
    loss = torch.nn.functional.cross_entropy(torch.eye(4) * 5, torch.arange(4)).item()
    assert result["eval_loss"] == pytest.approx(loss)
    empty = M.EvalSums.fields(2)  # a rank without batches still has every sum, as zeros
    assert sorted(empty.sums) == ["acc", "count", "loss", "rmse"]


def test_fields_result_reports_channels_in_physical_units():
    sums = M.EvalSums.fields(2)
    target = torch.randn(4, 2, 8, 16)
    M.fields_batch(sums, target + 0.25, target, torch.tensor(0.1), None)
    out = M.fields_result(sums.reduce(lambda t: t), stds=np.array([2.0, 10.0]))
    assert out["eval_rmse_mean"] == pytest.approx(0.25, rel=1e-5)
    assert out["eval_rmse_c0"] == pytest.approx(0.5, rel=1e-5)
    assert out["eval_rmse_c1"] == pytest.approx(2.5, rel=1e-5)
    assert out["eval_loss"] == pytest.approx(0.1)
    assert math.isfinite(out["eval_acc_mean"]) and out["eval_acc_c0"] > 0.9
