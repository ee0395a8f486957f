"""Postprocessing against scipy.ndimage as an independent reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from SegDeepLib.inference.postprocess import fill_label_holes, keep_largest_component, postprocess
from SegDeepLib.io.labels import LabelTable


def _random_labels(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.normal(size=(20, 22, 18)), 1.5)
    labels = np.zeros(smooth.shape, np.uint8)
    labels[smooth > 0.08] = 1
    labels[smooth < -0.1] = 2
    return labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_largest_component_matches_scipy(seed):
    labels = _random_labels(seed)
    out = keep_largest_component(labels, [1, 2])
    for value in (1, 2):
        comp, n = ndimage.label(labels == value)  # face connectivity, as ours
        assert n > 1  # the case is not trivial
        sizes = ndimage.sum(np.ones_like(comp), comp, index=range(1, n + 1))
        keep = comp == (1 + int(np.argmax(sizes)))
        np.testing.assert_array_equal(out == value, keep)
    assert set(np.unique(out)) <= {0, 1, 2}


@pytest.mark.parametrize("seed", [0, 3])
def test_fill_holes_matches_scipy_and_only_takes_background(seed):
    labels = _random_labels(seed)
    out = fill_label_holes(labels, [1])
    filled = ndimage.binary_fill_holes(labels == 1)
    expected = labels.copy()
    expected[filled & (labels == 0)] = 1
    np.testing.assert_array_equal(out, expected)
    assert ((labels == 2) == (out == 2)).all()


def test_options_select_organs_by_name():
    table = LabelTable.from_names(["liver", "spleen"])
    labels = np.zeros((9, 9, 9), np.uint8)
    labels[1:4, 1:4, 1:4] = 1
    labels[7, 7, 7] = 1
    labels[5:8, 0:2, 0:2] = 2
    labels[0, 8, 8] = 2
    out = postprocess(labels, table, {"largest_component": ["liver"], "fill_holes": False})
    assert out[7, 7, 7] == 0 and out[0, 8, 8] == 2
    assert (postprocess(labels, table, {}) == labels).all()
