"""Losses and evaluation metrics (pure tensor functions) and their cross-rank accumulation.

Latitude-weighted RMSE and ACC follow FourCastNet's `utils/weighted_acc_rmse.py`: row j of an
H-row grid sits at latitude 90 - 180 j / (H - 1) and weighs H cos(lat) / sum(cos(lat)); both are
computed per sample and channel, then averaged over samples. ACC is taken on anomalies (fields
minus the climatology). Every metric is accumulated as sums and counts, so one all-reduce gives
the exact mean over all ranks however unevenly the evaluation set splits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

_EPS = 1e-12


def relative_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ||pred - target|| / ||target|| (FourCastNet's LpLoss, p=2, rel)."""
    n = pred.shape[0]
    diff = torch.linalg.vector_norm((pred - target).reshape(n, -1), dim=1)
    ref = torch.linalg.vector_norm(target.reshape(n, -1), dim=1)
    return (diff / ref.clamp_min(_EPS)).mean()


def lat_weights(height: int, device=None) -> torch.Tensor:
    if height < 2:
        return torch.ones(height, device=device)
    lat = 90.0 - torch.arange(height, device=device, dtype=torch.float64) * 180.0 / (height - 1)
    cos = torch.cos(math.pi / 180.0 * lat)
    return (height * cos / cos.sum()).float()


def weighted_rmse_channels(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] x2 -> [N, C] latitude-weighted RMSE."""
    w = lat_weights(pred.shape[-2], pred.device).reshape(1, 1, -1, 1)
    return torch.sqrt(torch.mean(w * (pred - target) ** 2, dim=(-1, -2)))


def weighted_acc_channels(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] anomalies x2 -> [N, C] latitude-weighted anomaly correlation."""
    w = lat_weights(pred.shape[-2], pred.device).reshape(1, 1, -1, 1)
    num = torch.sum(w * pred * target, dim=(-1, -2))
    den = torch.sqrt(
        torch.sum(w * pred * pred, dim=(-1, -2)) * torch.sum(w * target**2, dim=(-1, -2))
    )
    return num / den.clamp_min(_EPS)


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> torch.Tensor:
    """Number of samples whose label is among the top-k logits, for each k (k capped at C)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == target[:, None]
    return torch.stack([hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks]).double()


class EvalSums:
    """Named running sums (tensors on the training device, so no host sync per batch). Start
    from zeros of every name so a rank with no evaluation batch still joins the all-reduce."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], device=None):
        self.sums = {
            n: torch.zeros(s, dtype=torch.float64, device=device) for n, s in shapes.items()
        }

    @classmethod
    def classification(cls, device=None) -> EvalSums:
        return cls({"count": (), "loss": (), "correct": (2,)}, device)

    @classmethod
    def fields(cls, channels: int, device=None) -> EvalSums:
        return cls({"count": (), "loss": (), "rmse": (channels,), "acc": (channels,)}, device)

    def add(self, name: str, value: torch.Tensor | float) -> None:
        """A tensor on the device, or a Python number (added as a scalar: no host-to-device
        copy, which `torch.tensor(n, device=...)` would be, blocking, once per batch)."""
        if isinstance(value, torch.Tensor):
            value = value.detach().double()
        self.sums[name] += value

    def reduce(
        self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        names = sorted(self.sums)
        flat = torch.cat([self.sums[n].reshape(-1) for n in names])
        flat = all_reduce_sum(flat).cpu()  # the evaluation's one host sync
        out, at = {}, 0
        for n in names:
            size = self.sums[n].numel()
            out[n] = flat[at : at + size].reshape(self.sums[n].shape)
            at += size
        return out


def classification_batch(sums: EvalSums, logits: torch.Tensor, target: torch.Tensor) -> None:
    sums.add("count", float(target.shape[0]))
    sums.add("loss", F.cross_entropy(logits.float(), target, reduction="sum"))
    sums.add("correct", topk_correct(logits, target))


def classification_result(totals: dict[str, torch.Tensor]) -> dict[str, float]:
    n = float(totals["count"])
    if n == 0:
        return {}
    top1, top5 = (totals["correct"] / n).tolist()
    return {"eval_loss": float(totals["loss"]) / n, "eval_top1": top1, "eval_top5": top5}


def fields_batch(sums: EvalSums, pred, target, loss, clim: torch.Tensor | None) -> None:
    """`pred`/`target`: the first forecast step [N, C, H, W] (normalised units)."""
    n = pred.shape[0]
    sums.add("count", float(n))
    sums.add("loss", loss * n)
    pred, target = pred.float(), target.float()
    sums.add("rmse", weighted_rmse_channels(pred, target).sum(dim=0))
    anomaly = (lambda t: t - clim) if clim is not None else (lambda t: t)
    sums.add("acc", weighted_acc_channels(anomaly(pred), anomaly(target)).sum(dim=0))


def fields_result(totals: dict[str, torch.Tensor], stds=None) -> dict[str, float]:
    n = float(totals["count"])
    if n == 0:
        return {}
    rmse, acc = totals["rmse"] / n, totals["acc"] / n
    out = {
        "eval_loss": float(totals["loss"]) / n,
        "eval_rmse_mean": float(rmse.mean()),  # normalised units, comparable across channels
        "eval_acc_mean": float(acc.mean()),
    }
    scale = stds if stds is not None else [1.0] * len(rmse)
    for c, (r, a) in enumerate(zip(rmse.tolist(), acc.tolist(), strict=True)):
        out[f"eval_rmse_c{c}"] = r * float(scale[c])
        out[f"eval_acc_c{c}"] = a
    return out
