"""Segmentation metrics (numpy and SimpleITK only, usable without torch).

* :mod:`~SegDeepLib.metrics.overlap`: DSC, Jaccard, VOE, RVD, precision, recall.
* :mod:`~SegDeepLib.metrics.surface`: ASD, MSD (Hausdorff), HD95, NSD, AVD in mm, with the
  surface and distance definitions.
* :mod:`~SegDeepLib.metrics.labelmap`: all of them per class between two label maps on one grid.
* :mod:`~SegDeepLib.metrics.em`: ISBI 2012 V_rand and V_info for 2D EM segmentations.
* :mod:`~SegDeepLib.metrics.summary` / :mod:`~SegDeepLib.metrics.cases`: aggregation, CSV/JSON
  output and case matching used by ``segdeep evaluate``.

Empty-mask policy (what nnU-Net/MONAI users expect, made explicit):

* both prediction and reference empty: a perfect result (DSC/Jaccard/precision/recall/NSD 1,
  VOE/RVD/distances 0);
* exactly one empty: DSC/Jaccard/NSD 0, VOE 1, distances ``inf``; RVD ``inf`` (empty reference) or
  -1 (empty prediction); precision/recall ``nan`` where their denominator is 0;
* summaries leave every non-finite value out and report how many were left out (``n_excluded``).
"""

from SegDeepLib.metrics.em import (
    EM_METRICS,
    isbi_scores,
    rand_info_scores,
    segments_from_foreground,
    stack_scores,
)
from SegDeepLib.metrics.labelmap import (
    METRICS,
    check_label_maps,
    evaluate_label_maps,
    evaluate_masks,
)
from SegDeepLib.metrics.overlap import Confusion, confusion, overlap_metrics
from SegDeepLib.metrics.surface import distance_metrics, distance_to_set, surface_mask

__all__ = [
    "EM_METRICS",
    "METRICS",
    "Confusion",
    "check_label_maps",
    "confusion",
    "distance_metrics",
    "distance_to_set",
    "evaluate_label_maps",
    "evaluate_masks",
    "isbi_scores",
    "overlap_metrics",
    "rand_info_scores",
    "segments_from_foreground",
    "stack_scores",
    "surface_mask",
]
