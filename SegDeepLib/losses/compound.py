"""Combinations: Dice + cross-entropy, and the deep-supervision wrapper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import nn

from SegDeepLib.errors import SegDeepError
from SegDeepLib.losses.base import Prepared, SegmentationLoss
from SegDeepLib.losses.cross_entropy import CrossEntropyLoss
from SegDeepLib.losses.overlap import SoftDiceLoss
from SegDeepLib.losses.registry import build_loss, register_loss

LossSpec = Union[str, dict, nn.Module]


@register_loss("dice_ce")
class DiceCELoss(SegmentationLoss):
    """``dice_weight * SoftDice + ce_weight * CE`` (kwargs of each part in ``dice`` / ``ce``)."""

    def __init__(
        self,
        dice: dict | None = None,
        ce: dict | None = None,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.dice = SoftDiceLoss(**(dice or {}))
        self.ce = CrossEntropyLoss(**(ce or {}))
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)

    def compute(self, batch: Prepared) -> torch.Tensor:
        return self.dice_weight * self.dice.compute(batch) + self.ce_weight * self.ce.compute(batch)


@register_loss("deep_supervision")
class DeepSupervisionLoss(nn.Module):
    """Deep supervision as in the pancreas paper: ``L(Y) + sum_k w_k L(U_k)``.

    Called with the network's ``forward(x, return_all=True)`` output ``(fused, [aux, ...])`` (a
    plain tensor is scored as the fused output alone). Auxiliary logits of another spatial size
    are interpolated (linearly) to the target's size, so target, mask and ignore labels are never
    resampled.

    Args:
        loss: the per-output loss (a config dict, a name, or a loss module); default Jaccard.
        aux_weights: one weight per auxiliary output (default 1 each).
        fused_weight: weight of the fused output's loss (default 1).
    """

    def __init__(
        self,
        loss: LossSpec = "jaccard",
        aux_weights: Sequence[float] | None = None,
        fused_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.loss = loss if isinstance(loss, nn.Module) else build_loss(loss)
        self.aux_weights = None if aux_weights is None else [float(w) for w in aux_weights]
        self.fused_weight = float(fused_weight)

    def forward(
        self,
        outputs: Any,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        class_present: torch.Tensor | None = None,
    ) -> torch.Tensor:
        fused, aux = _split_outputs(outputs)
        total = self.fused_weight * self.loss(fused, target, mask, class_present)
        weights = self._weights(len(aux))
        for weight, logits in zip(weights, aux):
            logits = _resize_like(logits, fused)
            total = total + weight * self.loss(logits, target, mask, class_present)
        return total

    def _weights(self, count: int) -> list:
        if self.aux_weights is None:
            return [1.0] * count
        if len(self.aux_weights) != count:
            raise SegDeepError(
                f"deep supervision: {len(self.aux_weights)} aux_weights for {count} auxiliary "
                "outputs; give one weight per output"
            )
        return self.aux_weights


def _split_outputs(outputs: Any) -> tuple[torch.Tensor, list]:
    if torch.is_tensor(outputs):
        return outputs, []
    if isinstance(outputs, (tuple, list)) and len(outputs) == 2 and torch.is_tensor(outputs[0]):
        return outputs[0], list(outputs[1])
    raise SegDeepError(
        "deep supervision: expected logits or (fused_logits, [aux_logits, ...]) "
        "as returned by forward(x, return_all=True)"
    )


def _resize_like(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    if logits.shape[2:] == reference.shape[2:]:
        return logits
    mode = {3: "linear", 4: "bilinear", 5: "trilinear"}[logits.ndim]
    return F.interpolate(logits, size=reference.shape[2:], mode=mode, align_corners=False)
