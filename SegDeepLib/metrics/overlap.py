"""Voxel-overlap metrics of one class: DSC, Jaccard, VOE, RVD, precision, recall.

``pred`` is the segmentation being evaluated, ``ref`` the reference (ground truth); both are
boolean masks on the same grid.

Empty-mask policy (the same for every metric module; see :mod:`SegDeepLib.metrics`):

==========================  =====  =======  ===  ====  =========  ======
case                        DSC    Jaccard  VOE  RVD   precision  recall
==========================  =====  =======  ===  ====  =========  ======
both empty                  1      1        0    0     1          1
reference empty only        0      0        1    inf   0          nan
prediction empty only       0      0        1    -1    nan        0
==========================  =====  =======  ===  ====  =========  ======

``nan`` marks a ratio with a zero denominator (undefined), ``inf`` a relative volume difference
against an empty reference. Summaries leave non-finite values out and count them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OVERLAP_METRICS = ("dsc", "jaccard", "voe", "rvd", "precision", "recall")


@dataclass(frozen=True)
class Confusion:
    """Voxel counts of one class: true positives, false positives, false negatives."""

    tp: int
    fp: int
    fn: int

    @property
    def pred_count(self) -> int:
        """Voxels in the prediction."""
        return self.tp + self.fp

    @property
    def ref_count(self) -> int:
        """Voxels in the reference."""
        return self.tp + self.fn


def confusion(pred: np.ndarray, ref: np.ndarray) -> Confusion:
    """Count TP/FP/FN between two boolean masks of the same shape."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    tp = int(np.count_nonzero(pred & ref))
    return Confusion(tp=tp, fp=int(np.count_nonzero(pred)) - tp, fn=int(np.count_nonzero(ref)) - tp)


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def overlap_metrics(counts: Confusion) -> dict[str, float]:
    """DSC, Jaccard, VOE = 1 - Jaccard, RVD = (|P| - |R|) / |R|, precision, recall.

    Follows the empty-mask policy in the module docstring.
    """
    if counts.pred_count == 0 and counts.ref_count == 0:
        return {"dsc": 1.0, "jaccard": 1.0, "voe": 0.0, "rvd": 0.0, "precision": 1.0, "recall": 1.0}
    union = counts.tp + counts.fp + counts.fn
    jaccard = counts.tp / union
    if counts.ref_count:
        rvd = (counts.pred_count - counts.ref_count) / counts.ref_count
    else:
        rvd = math.inf
    return {
        "dsc": 2.0 * counts.tp / (union + counts.tp),
        "jaccard": jaccard,
        "voe": 1.0 - jaccard,
        "rvd": rvd,
        "precision": _ratio(counts.tp, counts.pred_count),
        "recall": _ratio(counts.tp, counts.ref_count),
    }
