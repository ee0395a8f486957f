"""Segmentation losses, each usable on its own or built by name with :func:`build_loss`.

Call signature of every loss: ``loss(logits, target, mask=None, class_present=None) -> scalar``
(see :mod:`SegDeepLib.losses.base` for ignored voxels and partially labelled cases).
"""

from SegDeepLib.losses.base import IGNORE_INDEX, SegmentationLoss
from SegDeepLib.losses.compound import DeepSupervisionLoss, DiceCELoss
from SegDeepLib.losses.cross_entropy import (
    ClassBalancedCrossEntropyLoss,
    CrossEntropyLoss,
    WeightedCrossEntropyLoss,
)
from SegDeepLib.losses.overlap import BatchDiceLoss, JaccardLoss, OverlapLoss, SoftDiceLoss
from SegDeepLib.losses.registry import available_losses, build_loss, register_loss

__all__ = [
    "IGNORE_INDEX",
    "BatchDiceLoss",
    "ClassBalancedCrossEntropyLoss",
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "JaccardLoss",
    "OverlapLoss",
    "SegmentationLoss",
    "SoftDiceLoss",
    "WeightedCrossEntropyLoss",
    "available_losses",
    "build_loss",
    "register_loss",
]
