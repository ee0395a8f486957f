"""Voxel-wise cross-entropy losses: plain, cascade-weighted (Roth 2018) and class-balanced (HED).

All three average ``-log p_target`` over the valid voxels (target not ``IGNORE_INDEX``, ``mask``
True) with different per-class weights. Partially labelled cases use the merged (marginal)
background probability, see :mod:`SegDeepLib.losses.base`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from SegDeepLib.losses.base import Prepared, SegmentationLoss, class_vector, zero_loss
from SegDeepLib.losses.registry import register_loss


def voxel_nll(batch: Prepared) -> torch.Tensor:
    """``-log p_target`` per voxel ``(N, *sp)``, zero at ignored voxels."""
    nll = -batch.log_probs.gather(1, batch.target.unsqueeze(1)).squeeze(1)
    return torch.where(batch.valid, nll, torch.zeros_like(nll))


def class_counts(batch: Prepared, per_case: bool) -> torch.Tensor:
    """Valid voxels of each class: ``(N, K)`` per case, else ``(1, K)`` for the whole batch."""
    counts = batch.one_hot().flatten(2).sum(-1)
    return counts if per_case else counts.sum(0, keepdim=True)


@register_loss("ce")
class CrossEntropyLoss(SegmentationLoss):
    """Plain voxel-wise cross-entropy, mean over valid voxels.

    With ``weight`` (one per class) it is the weighted mean ``sum w_t nll / sum w_t``, exactly as
    :func:`torch.nn.functional.cross_entropy`.
    """

    def __init__(self, weight: Sequence[float] | None = None) -> None:
        super().__init__()
        self.weight = None if weight is None else [float(w) for w in weight]

    def compute(self, batch: Prepared) -> torch.Tensor:
        nll = voxel_nll(batch)
        weights = class_vector(self.weight, batch.num_classes, batch, "ce")
        if weights is None:
            voxel_w = batch.valid.to(nll.dtype)
        else:
            voxel_w = weights[batch.target] * batch.valid
        total = voxel_w.sum()
        if float(total) == 0.0:
            return zero_loss(batch)
        return (voxel_w * nll).sum() / total


@register_loss("weighted_ce")
class WeightedCrossEntropyLoss(SegmentationLoss):
    """The cascade paper's weighted cross-entropy (Roth et al. 2018, eqs. 3-4).

    ``L = -1/N_C sum_k lambda_k sum_{x in S_k} log p_k(x)`` with
    ``lambda_k = (1 - N_k / N_C) / (K - 1)``, where ``N_C`` counts the valid voxels (inside the
    candidate region ``mask``, not ignored) and ``N_k`` those of class k. The weights are computed
    over the whole batch (``per_case=False``, default) or per case (``per_case=True``, then the
    per-case losses are averaged over the cases that have valid voxels).
    """

    def __init__(self, per_case: bool = False) -> None:
        super().__init__()
        self.per_case = bool(per_case)

    def compute(self, batch: Prepared) -> torch.Tensor:
        counts = class_counts(batch, self.per_case)  # (N or 1, K)
        n_c = counts.sum(1, keepdim=True)
        lam = (1.0 - counts / n_c.clamp_min(1.0)) / (batch.num_classes - 1)
        return _weighted_mean(batch, lam, n_c[:, 0], self.per_case)


@register_loss("cbce")
class ClassBalancedCrossEntropyLoss(SegmentationLoss):
    """Class-balanced cross-entropy (HED, Xie & Tu 2015; the pancreas paper's CBCE baseline).

    Per case, class k gets weight ``1 - N_k / N`` (binary: ``beta = |Y-|/|Y|`` on foreground,
    ``1 - beta`` on background), ``L_n = -1/N sum_x w_{t(x)} log p_{t(x)}(x)``, averaged over
    cases. HED sums instead of averaging over voxels; the factor 1/N only rescales the loss.
    """

    def compute(self, batch: Prepared) -> torch.Tensor:
        counts = class_counts(batch, per_case=True)
        n = counts.sum(1, keepdim=True)
        weights = 1.0 - counts / n.clamp_min(1.0)
        return _weighted_mean(batch, weights, n[:, 0], per_case=True)


def _weighted_mean(
    batch: Prepared, weights: torch.Tensor, n_valid: torch.Tensor, per_case: bool
) -> torch.Tensor:
    """``-1/N sum w_t log p_t`` per case (or over the batch when ``weights`` is ``(1, K)``)."""
    nll = voxel_nll(batch)
    n = nll.shape[0]
    if per_case:
        voxel_w = weights.gather(1, batch.target.reshape(n, -1)).reshape(nll.shape)
        sums = (voxel_w * nll).reshape(n, -1).sum(1)
        has = n_valid > 0
        if not bool(has.any()):
            return zero_loss(batch)
        return (sums[has] / n_valid[has]).mean()
    if float(n_valid[0]) == 0.0:
        return zero_loss(batch)
    voxel_w = weights[0][batch.target]
    return (voxel_w * nll).sum() / n_valid[0]
