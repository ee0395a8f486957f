"""Shared machinery of every segmentation loss: input checks, ignored voxels, partial labels.

All losses take ``loss(logits, target, mask=None, class_present=None)``:

- ``logits`` ``(N, K, *spatial)`` (K >= 2, softmax over K; class 0 is background);
- ``target`` int ``(N, *spatial)`` (``(N, 1, *spatial)`` is accepted too) with values in
  ``[0, K)`` or :data:`IGNORE_INDEX`;
- ``mask`` bool ``(N, *spatial)``: voxels where it is False are ignored (candidate region);
- ``class_present`` bool ``(N, K)``: the classes each case annotates (partially labelled data).

Partially labelled cases use the *marginal* convention: in case ``n`` a voxel labelled background
means "background or any class this case does not annotate", so the probabilities of the
unannotated classes are merged into the background probability
(``p0' = p0 + sum_{k unannotated} pk``) before any loss is computed. Cross-entropy losses use the
merged probability for background voxels; overlap (Dice/Jaccard) losses additionally drop the
unannotated classes of that case from their average. Background is always annotated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from SegDeepLib.errors import SegDeepError

IGNORE_INDEX = 255


@dataclass
class Prepared:
    """Validated, loss-ready view of one call's inputs.

    ``log_probs`` ``(N, K, *sp)``: log-softmax with unannotated classes merged into background;
    ``target`` ``(N, *sp)`` int64 with ignored voxels set to 0; ``valid`` ``(N, *sp)`` bool;
    ``present`` ``(N, K)`` bool (class 0 always True).
    """

    log_probs: torch.Tensor
    target: torch.Tensor
    valid: torch.Tensor
    present: torch.Tensor

    @property
    def num_classes(self) -> int:
        return self.log_probs.shape[1]

    def probs(self) -> torch.Tensor:
        return self.log_probs.exp()

    def one_hot(self) -> torch.Tensor:
        """``(N, K, *sp)`` one-hot target (zero at ignored voxels), in the logits' dtype."""
        k = torch.arange(self.num_classes, device=self.target.device)
        shape = (1, -1) + (1,) * (self.target.ndim - 1)
        hot = self.target.unsqueeze(1) == k.view(shape)
        return (hot & self.valid.unsqueeze(1)).to(self.log_probs.dtype)


class SegmentationLoss(nn.Module):
    """Base class: subclasses implement :meth:`compute` on a :class:`Prepared` batch."""

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        class_present: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.compute(prepare(logits, target, mask, class_present))

    def compute(self, batch: Prepared) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def prepare(
    logits: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    class_present: torch.Tensor | None = None,
) -> Prepared:
    """Check the inputs and build the :class:`Prepared` view (see the module docstring)."""
    target = _check_shapes(logits, target, mask, class_present)
    valid = target != IGNORE_INDEX
    if mask is not None:
        valid = valid & mask
    clean = torch.where(valid, target, torch.zeros_like(target))
    _check_values(clean, valid, logits.shape[1])
    present = _present(class_present, logits)
    _check_target_present(clean, valid, present)
    log_probs = torch.log_softmax(_loss_dtype(logits), dim=1)
    if class_present is not None:
        log_probs = merge_unannotated(log_probs, present)
    return Prepared(log_probs, clean, valid, present)


def merge_unannotated(log_probs: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Replace log p0 by log(p0 + sum of the unannotated classes' p) per case (marginal loss)."""
    merged = ~present
    merged[:, 0] = True
    view = merged.view(merged.shape + (1,) * (log_probs.ndim - 2))
    neg_inf = torch.tensor(float("-inf"), dtype=log_probs.dtype, device=log_probs.device)
    background = torch.logsumexp(torch.where(view, log_probs, neg_inf), dim=1, keepdim=True)
    return torch.cat([background, log_probs[:, 1:]], dim=1)


def zero_loss(batch: Prepared) -> torch.Tensor:
    """A zero that keeps the graph (nothing to learn from: every voxel ignored)."""
    return batch.log_probs.sum() * 0.0


def class_vector(
    values: list | None, num_classes: int, batch: Prepared, name: str
) -> torch.Tensor | None:
    """A per-class weight list as a tensor, checked against K."""
    if values is None:
        return None
    if len(values) != num_classes:
        raise SegDeepError(
            f"loss {name}: {len(values)} class weights for {num_classes} classes; "
            "give one weight per class (background first)"
        )
    return torch.as_tensor(values, dtype=batch.log_probs.dtype, device=batch.log_probs.device)


def _loss_dtype(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast) are promoted to float32 for a stable loss."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        return logits.float()
    return logits


def _check_shapes(logits, target, mask, class_present) -> torch.Tensor:
    if not torch.is_tensor(logits) or logits.ndim < 3 or not logits.is_floating_point():
        raise SegDeepError(
            "loss: logits must be a float tensor (N, K, *spatial); got "
            f"{getattr(logits, 'shape', type(logits))}"
        )
    if logits.shape[1] < 2:
        raise SegDeepError(
            f"loss: logits have {logits.shape[1]} class channel(s); networks output K >= 2 "
            "classes (background included)"
        )
    if not torch.is_tensor(target) or target.is_floating_point() or target.dtype == torch.bool:
        raise SegDeepError("loss: target must be an integer label tensor (N, *spatial)")
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    spatial = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(target.shape) != spatial:
        raise SegDeepError(
            f"loss: target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}"
            f"; expected {spatial}"
        )
    if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != spatial):
        raise SegDeepError(f"loss: mask must be a bool tensor of shape {spatial}")
    expected = (logits.shape[0], logits.shape[1])
    if class_present is not None and (
        class_present.dtype != torch.bool or tuple(class_present.shape) != expected
    ):
        raise SegDeepError(f"loss: class_present must be a bool tensor of shape {expected}")
    return target.long()


def _check_values(target: torch.Tensor, valid: torch.Tensor, num_classes: int) -> None:
    bad = valid & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        raise SegDeepError(
            f"loss: target holds labels outside [0, {num_classes - 1}] "
            f"(e.g. {int(target[bad][0])}); map labels to class indices or use {IGNORE_INDEX} "
            "to ignore voxels"
        )


def _present(class_present: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    if class_present is None:
        return torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
    present = class_present.clone()
    present[:, 0] = True
    return present


def _check_target_present(target: torch.Tensor, valid: torch.Tensor, present: torch.Tensor):
    n = target.shape[0]
    flat = target.reshape(n, -1)
    annotated = present.gather(1, flat).reshape(target.shape)
    if bool((valid & ~annotated).any()):
        raise SegDeepError(
            "loss: target labels a class that class_present marks as not annotated; "
            "fix class_present or the label map"
        )
