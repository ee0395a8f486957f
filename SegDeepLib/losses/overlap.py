"""Overlap losses on softmax probabilities: soft Dice, batch Dice and Jaccard.

For class k, with soft sums over the valid voxels ``I = sum p_k r_k``, ``P = sum p_k``,
``G = sum r_k`` (r: one-hot target):

- Dice ``d = (2 I + s) / (P + G + s)`` (Milletari 2016; tutorial paper eq. 1 with s = 0);
- Jaccard ``j = (I + s) / (P + G - I + s)``; for a binary target this is exactly the pancreas
  paper's eq. 12/14 ``sum_{f in Y+} p_f / (|Y+| + sum_{b in Y-} p_b)``.

Losses are ``1 - overlap`` (0 = perfect). The papers write ``-dice``; ``negative=True`` gives
that form (same gradients, a constant apart). ``s`` (``smooth``, default 1e-5) keeps empty classes
defined (an empty class predicted empty scores 1). Classes a partially labelled case does not
annotate, and cases without valid voxels, are left out of the averages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from SegDeepLib.errors import SegDeepError
from SegDeepLib.losses.base import Prepared, SegmentationLoss, class_vector, zero_loss
from SegDeepLib.losses.registry import register_loss


def overlap_sums(batch: Prepared) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(I, P, G)``, each ``(N, K)``: soft intersection, prediction and target sums."""
    probs = batch.probs() * batch.valid.unsqueeze(1)
    hot = batch.one_hot()
    inter = (probs * hot).flatten(2).sum(-1)
    return inter, probs.flatten(2).sum(-1), hot.flatten(2).sum(-1)


class OverlapLoss(SegmentationLoss):
    """Common engine of the Dice and Jaccard losses.

    Args:
        kind: ``"dice"`` or ``"jaccard"``.
        include_background: score class 0 too.
        batch: sum I, P, G over the whole batch before the ratio (batch Dice); otherwise one
            score per case and class, averaged.
        weights: per-class weights ``w_l`` (length K); the loss is ``(1/L) sum_l w_l (1 - d_l)``
            over the L scored classes (tutorial paper eq. 2).
        smooth: ``s`` above.
        negative: return ``-(1/L) sum_l w_l d_l`` (the papers' form) instead.
    """

    def __init__(
        self,
        kind: str = "dice",
        include_background: bool = True,
        batch: bool = False,
        weights: Sequence[float] | None = None,
        smooth: float = 1e-5,
        negative: bool = False,
    ) -> None:
        super().__init__()
        if kind not in ("dice", "jaccard"):
            raise SegDeepError(f"overlap loss: kind must be 'dice' or 'jaccard', not {kind!r}")
        if smooth < 0:
            raise SegDeepError(f"overlap loss: smooth must be >= 0, not {smooth}")
        self.kind = kind
        self.include_background = bool(include_background)
        self.batch = bool(batch)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.smooth = float(smooth)
        self.negative = bool(negative)

    def compute(self, batch: Prepared) -> torch.Tensor:
        inter, pred, truth = overlap_sums(batch)
        scored = self._scored(batch)
        if self.batch:
            inter, pred, truth = (t * scored for t in (inter, pred, truth))
            inter, pred, truth = (t.sum(0, keepdim=True) for t in (inter, pred, truth))
            scored = scored.any(0, keepdim=True)
        score = self._score(inter, pred, truth)
        weights = class_vector(self.weights, batch.num_classes, batch, self.kind)
        if weights is None:
            weights = torch.ones_like(score[0])
        term = weights * (-score if self.negative else 1.0 - score)
        return _mean_over_scored(term, scored, batch)

    def _scored(self, batch: Prepared) -> torch.Tensor:
        """``(N, K)`` bool: which (case, class) pairs enter the average."""
        scored = batch.present.clone()
        if not self.include_background:
            scored[:, 0] = False
        has_voxels = batch.valid.flatten(1).any(1)
        return scored & has_voxels.unsqueeze(1)

    def _score(self, inter, pred, truth) -> torch.Tensor:
        s = self.smooth
        if self.kind == "dice":
            num, den = 2.0 * inter + s, pred + truth + s
        else:
            num, den = inter + s, pred + truth - inter + s
        # 0/0 (only when smooth == 0): both empty, perfect agreement; no gradient there.
        empty = den <= 0
        return torch.where(empty, torch.ones_like(num), num / torch.where(empty, 1.0, den))


def _mean_over_scored(term: torch.Tensor, scored: torch.Tensor, batch: Prepared) -> torch.Tensor:
    """Mean over scored classes within each case, then over cases with any scored class."""
    counts = scored.sum(1)
    rows = counts > 0
    if not bool(rows.any()):
        return zero_loss(batch)
    per_case = torch.where(scored, term, torch.zeros_like(term)).sum(1)
    return (per_case[rows] / counts[rows]).mean()


@register_loss("dice")
class SoftDiceLoss(OverlapLoss):
    """Multi-class soft Dice of the tutorial paper (Roth 2018): per case, every class, w_l = 1."""

    def __init__(
        self,
        weights: Sequence[float] | None = None,
        include_background: bool = True,
        batch: bool = False,
        smooth: float = 1e-5,
        negative: bool = False,
    ) -> None:
        super().__init__("dice", include_background, batch, weights, smooth, negative)


@register_loss("batch_dice")
class BatchDiceLoss(OverlapLoss):
    """Batch Dice of the FC-ResNet paper: ``-2 sum o y / (sum o + sum y)`` over the whole batch.

    Foreground classes only (with K = 2 exactly the paper's binary loss; with K > 2 the mean of
    the per-class batch Dice losses).
    """

    def __init__(
        self,
        weights: Sequence[float] | None = None,
        include_background: bool = False,
        smooth: float = 1e-5,
        negative: bool = False,
    ) -> None:
        super().__init__("dice", include_background, True, weights, smooth, negative)


@register_loss("jaccard")
class JaccardLoss(OverlapLoss):
    """Jaccard loss of the pancreas paper (Cai 2018, eq. 14), per case, foreground classes."""

    def __init__(
        self,
        weights: Sequence[float] | None = None,
        include_background: bool = False,
        batch: bool = False,
        smooth: float = 1e-5,
        negative: bool = False,
    ) -> None:
        super().__init__("jaccard", include_background, batch, weights, smooth, negative)
