"""ISBI 2012 EM scores: foreground-restricted Rand score V_rand and information score V_info.

Definitions follow Arganda-Carreras et al., "Crowdsourcing the creation of image segmentation
algorithms for connectomics", Front. Neuroanat. 2015, and the challenge's reference implementation
(Fiji, ``trainableSegmentation.metrics``):

* **Segments.** A binary map (``True`` = cell interior / non-membrane) is turned into segments by
  labelling the 4-connected components of the foreground (:func:`segments_from_foreground`);
  membrane pixels get segment 0. Already-labelled maps can be passed to :func:`rand_info_scores`.
* **Foreground restriction.** Only pixels where the *reference* is non-zero are counted
  (``n`` of them). A pixel that the *prediction* labels 0 there is its own singleton segment.
* With ``p_ij`` the fraction of those pixels in predicted segment ``i`` and reference segment
  ``j``, ``s_i = sum_j p_ij``, ``t_j = sum_i p_ij``:

  - ``V_rand_split = sum p_ij^2 / sum t_j^2``, ``V_rand_merge = sum p_ij^2 / sum s_i^2``,
    ``V_rand`` = their harmonic mean;
  - ``V_info_split = I(S;T) / H(S)``, ``V_info_merge = I(S;T) / H(T)``, ``V_info`` = their
    harmonic mean ``= 2 I / (H(S) + H(T))`` (natural logarithms; the base cancels).

  When both entropies are 0 (one segment in each, hence the same partition) V_info is 1.

The challenge ranks the *maximum over thresholds of the probability map* "after thinning" the
proposal's boundaries; these functions score one given binary map or segmentation (no thinning,
no threshold sweep), which is what a segmentation pipeline outputs. Scores are per 2D slice; a
stack is scored slice by slice and averaged by the caller.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError

EM_METRICS = ("v_rand", "v_rand_split", "v_rand_merge", "v_info", "v_info_split", "v_info_merge")


def segments_from_foreground(foreground: np.ndarray) -> np.ndarray:
    """Label the 4-connected components of a 2D foreground mask 1..K (0 = membrane)."""
    foreground = np.asarray(foreground, dtype=bool)
    if foreground.ndim != 2:
        raise SegDeepError(f"EM scores need 2D label maps, got an array of shape {foreground.shape}")
    image = sitk.GetImageFromArray(foreground.astype(np.uint8))
    return sitk.GetArrayFromImage(sitk.ConnectedComponent(image, False)).astype(np.int64)


def _sums(pred: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    inside = ref != 0
    pred_in, ref_in = pred[inside].astype(np.int64), ref[inside].astype(np.int64)
    singletons = int(np.count_nonzero(pred_in == 0))
    assigned = pred_in != 0
    pred_a, ref_a = pred_in[assigned], ref_in[assigned]
    joint = _counts(pred_a * (int(ref_in.max()) + 1) + ref_a)  # one key per (pred, ref) pair
    pred_counts = _counts(pred_a)
    ref_counts = _counts(ref_in)
    ones = np.ones(singletons, dtype=np.int64)
    return {
        "n": np.array(inside.sum()),
        "joint": np.concatenate([joint, ones]),
        "pred": np.concatenate([pred_counts, ones]),
        "ref": ref_counts,
    }


def _counts(keys: np.ndarray) -> np.ndarray:
    """Occurrences of each distinct value."""
    if keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(keys, return_counts=True)[1].astype(np.int64)


def _harmonic(a: float, b: float) -> float:
    return 2.0 * a * b / (a + b) if a + b > 0 else 0.0


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def rand_info_scores(pred_segments: np.ndarray, ref_segments: np.ndarray) -> dict[str, float]:
    """V_rand and V_info (with split/merge parts) between two segment maps (0 = boundary).

    Returns NaNs when the reference has no foreground.
    """
    pred = np.asarray(pred_segments)
    ref = np.asarray(ref_segments)
    if pred.shape != ref.shape:
        raise SegDeepError(f"segment maps differ in shape: {pred.shape} vs {ref.shape}")
    if pred.size and (pred.min() < 0 or ref.min() < 0):
        raise SegDeepError("segment maps must hold non-negative segment ids (0 = boundary)")
    if not np.any(ref):
        return {key: math.nan for key in EM_METRICS}
    sums = _sums(pred, ref)
    n = float(sums["n"])
    p_joint, p_pred, p_ref = sums["joint"] / n, sums["pred"] / n, sums["ref"] / n
    sum_joint2 = float((p_joint**2).sum())
    split, merge = sum_joint2 / float((p_ref**2).sum()), sum_joint2 / float((p_pred**2).sum())
    h_pred, h_ref, h_joint = _entropy(p_pred), _entropy(p_ref), _entropy(p_joint)
    mutual = max(h_pred + h_ref - h_joint, 0.0)
    if h_pred + h_ref == 0:
        info_split = info_merge = info = 1.0
    else:
        info_split = mutual / h_pred if h_pred else 1.0
        info_merge = mutual / h_ref if h_ref else 1.0
        info = 2.0 * mutual / (h_pred + h_ref)
    return {
        "v_rand": _harmonic(split, merge),
        "v_rand_split": split,
        "v_rand_merge": merge,
        "v_info": info,
        "v_info_split": info_split,
        "v_info_merge": info_merge,
    }


def isbi_scores(pred_foreground: np.ndarray, ref_foreground: np.ndarray) -> dict[str, float]:
    """V_rand and V_info between two binary 2D maps (``True`` = non-membrane), 4-connected segments."""
    return rand_info_scores(segments_from_foreground(pred_foreground), segments_from_foreground(ref_foreground))


def stack_scores(pred_foreground: np.ndarray, ref_foreground: np.ndarray) -> list[dict[str, float]]:
    """:func:`isbi_scores` of each 2D slice (first axis) of a stack, or of one 2D map."""
    pred = np.asarray(pred_foreground, dtype=bool)
    ref = np.asarray(ref_foreground, dtype=bool)
    if pred.shape != ref.shape or pred.ndim not in (2, 3):
        raise SegDeepError(f"EM scores need two 2D maps or stacks of one shape, got {pred.shape} and {ref.shape}")
    if pred.ndim == 2:
        return [isbi_scores(pred, ref)]
    return [isbi_scores(p, r) for p, r in zip(pred, ref)]
