"""ISBI 2012 V_rand / V_info against brute-force pair counting, Counter entropies and hand cases."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy import ndimage

from SegDeepLib.errors import SegDeepError
from SegDeepLib.metrics.em import isbi_scores, rand_info_scores, segments_from_foreground
from Testing.conftest import shared_file


def _relabel_singletons(pred: np.ndarray, ref: np.ndarray) -> tuple[list, list]:
    """Pixels of the reference foreground as (predicted id, reference id); predicted 0 -> unique id."""
    pairs = []
    for k, (p, r) in enumerate(zip(pred.ravel(), ref.ravel())):
        if r != 0:
            pairs.append((("seg", int(p)) if p != 0 else ("single", k), int(r)))
    return [p for p, _ in pairs], [r for _, r in pairs]


def _brute_rand(pred, ref):
    """Ordered pixel pairs (self-pairs included, the N^2 normalisation) counted one by one."""
    s, t = _relabel_singletons(pred, ref)
    n = len(s)
    same_both = same_s = same_t = 0
    for a in range(n):
        for b in range(n):
            same_both += s[a] == s[b] and t[a] == t[b]
            same_s += s[a] == s[b]
            same_t += t[a] == t[b]
    split, merge = same_both / same_t, same_both / same_s
    return 2 * split * merge / (split + merge), split, merge


def _counter_entropy(labels) -> float:
    n = len(labels)
    return -sum(c / n * math.log(c / n) for c in Counter(labels).values())


def _brute_info(pred, ref):
    s, t = _relabel_singletons(pred, ref)
    h_s, h_t = _counter_entropy(s), _counter_entropy(t)
    mutual = h_s + h_t - _counter_entropy(list(zip(s, t)))
    return 2 * mutual / (h_s + h_t), mutual / h_s, mutual / h_t


@pytest.mark.parametrize("seed", range(4))
def test_random_segmentations_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 4, size=(9, 8))  # 0 = membrane
    pred = rng.integers(0, 5, size=(9, 8))
    got = rand_info_scores(pred, ref)
    v_rand, split, merge = _brute_rand(pred, ref)
    assert got["v_rand"] == pytest.approx(v_rand)
    assert got["v_rand_split"] == pytest.approx(split)
    assert got["v_rand_merge"] == pytest.approx(merge)
    v_info, info_split, info_merge = _brute_info(pred, ref)
    assert got["v_info"] == pytest.approx(v_info)
    assert got["v_info_split"] == pytest.approx(info_split)
    assert got["v_info_merge"] == pytest.approx(info_merge)


def test_hand_computed_split_and_merge():
    ref = np.ones((4, 4), int)
    halves = ref.copy()
    halves[:, 2:] = 2
    # splitting one reference segment in two halves: sum p^2 = 1/2, sum t^2 = 1, sum s^2 = 1/2
    split = rand_info_scores(halves, ref)
    assert (split["v_rand_split"], split["v_rand_merge"]) == pytest.approx((0.5, 1.0))
    assert split["v_rand"] == pytest.approx(2 / 3)
    assert split["v_info"] == pytest.approx(0.0) and split["v_info_merge"] == 1.0
    merged = rand_info_scores(ref, halves)
    assert (merged["v_rand_split"], merged["v_rand_merge"]) == pytest.approx((1.0, 0.5))
    assert rand_info_scores(halves, halves) == pytest.approx(dict.fromkeys(split, 1.0))


def test_only_reference_foreground_counts_and_predicted_zero_is_singletons():
    ref = np.array([[1, 1, 0, 2, 2]])
    pred = np.array([[5, 5, 5, 6, 6]])  # differs from ref only on the reference membrane pixel
    assert rand_info_scores(pred, ref)["v_rand"] == pytest.approx(1.0)
    unassigned = np.array([[5, 0, 0, 6, 6]])  # one pixel of segment 1 left unassigned
    got = rand_info_scores(unassigned, ref)
    # pixels: s = {5, single, 6, 6}, t = {1, 1, 2, 2}: sum p^2 = (1 + 1 + 4)/16, t^2 = 8/16, s^2 = 6/16
    assert got["v_rand_split"] == pytest.approx(6 / 8)
    assert got["v_rand_merge"] == pytest.approx(1.0)


def test_segments_are_4_connected():
    foreground = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], bool)
    segments = segments_from_foreground(foreground)
    assert len(np.unique(segments[foreground])) == 3
    expected, _ = ndimage.label(foreground)  # scipy's default structure is 4-connectivity in 2D
    assert isbi_scores(foreground, foreground)["v_rand"] == 1.0
    assert rand_info_scores(segments, expected)["v_rand"] == pytest.approx(1.0)


def test_errors_and_empty_reference():
    with pytest.raises(SegDeepError, match="2D"):
        segments_from_foreground(np.ones((2, 2, 2), bool))
    with pytest.raises(SegDeepError, match="shape"):
        rand_info_scores(np.ones((2, 2)), np.ones((2, 3)))
    assert all(math.isnan(v) for v in rand_info_scores(np.ones((3, 3)), np.zeros((3, 3))).values())


def test_real_isbi_slice_merge_lowers_merge_score_only():
    import SimpleITK as sitk

    path = shared_file("isbi2012-em/train/label/0.png")
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 127  # 255 = cell interior
    assert isbi_scores(ref, ref) == pytest.approx(dict.fromkeys(isbi_scores(ref, ref), 1.0))
    # erase the membranes of one 64x64 tile: neighbouring cells merge into one segment
    merged = ref.copy()
    merged[200:264, 200:264] = True
    got = isbi_scores(merged, ref)
    assert got["v_rand_merge"] < 0.99 and got["v_rand_split"] == pytest.approx(1.0)
    assert got["v_info_merge"] < 1.0 and got["v_info_split"] == pytest.approx(1.0)
    # thickening membranes by erosion removes pixels (singletons) and may split thin necks
    eroded = ndimage.binary_erosion(ref, iterations=2)
    assert isbi_scores(eroded, ref)["v_rand"] < 1.0
