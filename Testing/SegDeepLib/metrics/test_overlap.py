"""Overlap metrics against hand-computed counts and a set-based reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from SegDeepLib.metrics.overlap import Confusion, confusion, overlap_metrics


def _set_reference(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Textbook definitions on Python sets of voxel coordinates (independent of the counts code)."""
    p = {tuple(i) for i in np.argwhere(pred)}
    r = {tuple(i) for i in np.argwhere(ref)}
    jac = len(p & r) / len(p | r)
    return {
        "dsc": 2 * len(p & r) / (len(p) + len(r)),
        "jaccard": jac,
        "voe": 1 - jac,
        "rvd": (len(p) - len(r)) / len(r),
        "precision": len(p & r) / len(p),
        "recall": len(p & r) / len(r),
    }


def test_hand_computed_two_boxes():
    # pred covers x 0..3 (4 voxels), ref covers x 2..7 (6 voxels), overlap 2 voxels
    pred = np.zeros((1, 1, 10), bool)
    ref = np.zeros((1, 1, 10), bool)
    pred[..., 0:4] = True
    ref[..., 2:8] = True
    m = overlap_metrics(confusion(pred, ref))
    assert m["dsc"] == pytest.approx(2 * 2 / (4 + 6))
    assert m["jaccard"] == pytest.approx(2 / 8)
    assert m["voe"] == pytest.approx(6 / 8)
    assert m["rvd"] == pytest.approx((4 - 6) / 6)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 6)


@pytest.mark.parametrize("seed", range(5))
def test_random_masks_match_set_reference(seed):
    rng = np.random.default_rng(seed)
    pred = rng.random((6, 7, 8)) < 0.4
    ref = rng.random((6, 7, 8)) < 0.3
    got = overlap_metrics(confusion(pred, ref))
    for key, value in _set_reference(pred, ref).items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize(
    "counts, expected",
    [
        (Confusion(0, 0, 0), {"dsc": 1, "jaccard": 1, "voe": 0, "rvd": 0, "precision": 1, "recall": 1}),
        (Confusion(0, 5, 0), {"dsc": 0, "jaccard": 0, "voe": 1, "rvd": math.inf, "precision": 0,
                              "recall": math.nan}),
        (Confusion(0, 0, 5), {"dsc": 0, "jaccard": 0, "voe": 1, "rvd": -1, "precision": math.nan,
                              "recall": 0}),
    ],
    ids=["both-empty", "reference-empty", "prediction-empty"],
)
def test_empty_policy(counts, expected):
    got = overlap_metrics(counts)
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == value, key


def test_confusion_counts_and_shape_check():
    pred = np.array([1, 1, 0, 0, 1], bool)
    ref = np.array([1, 0, 1, 0, 0], bool)
    assert confusion(pred, ref) == Confusion(tp=1, fp=2, fn=1)
    with pytest.raises(ValueError):
        confusion(pred, ref[:4])


def test_confusion_treats_any_nonzero_value_as_inside():
    """Label values and soft masks count as masks (1 & 2 == 0 bitwise would lose voxels)."""

    pred = np.array([1, 2, 2, 0, 3], dtype=np.int16)
    ref = np.array([2, 2, 0, 0, 4], dtype=np.uint8)
    assert confusion(pred, ref) == Confusion(tp=3, fp=1, fn=0)
    soft = np.array([0.7, 0.2, 0.0, 0.0, 1.0])
    assert confusion(soft, ref) == Confusion(tp=3, fp=0, fn=0)
    with pytest.raises(ValueError, match=r"masks differ in shape: \(5,\) vs \(4,\)"):
        confusion(pred, ref[:4])
