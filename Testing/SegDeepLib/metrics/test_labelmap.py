"""Per-class evaluation of label maps: cropping changes nothing, geometry, oblique grids, errors."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import cKDTree

from SegDeepLib.errors import SegDeepError
from SegDeepLib.metrics.labelmap import METRICS, evaluate_label_maps, evaluate_masks


def _image(array: np.ndarray, spacing=(1.0, 1.0, 1.0), direction=None, origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def _oblique_direction() -> tuple[float, ...]:
    angle = np.deg2rad(30)
    rz = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(0.4), -np.sin(0.4)], [0, np.sin(0.4), np.cos(0.4)]])
    flip = np.diag([1.0, -1.0, 1.0])
    return tuple((rz @ rx @ flip).flatten())


def _random_labels(seed: int, shape=(10, 16, 14), n_labels=4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    array = np.zeros(shape, np.uint8)
    for value in range(1, n_labels + 1):
        for _ in range(2):
            lo = [rng.integers(0, s - 3) for s in shape]
            size = [rng.integers(2, 6) for _ in shape]
            array[tuple(slice(a, a + b) for a, b in zip(lo, size))] = value
    return array


def _physical_surface_points(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    surface = mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1), border_value=0)
    return np.array([image.TransformIndexToPhysicalPoint([int(i) for i in idx[::-1]])
                     for idx in np.argwhere(surface)])


def test_cropped_per_label_equals_full_array_evaluation():
    pred, ref = _random_labels(0), _random_labels(1)
    spacing_xyz = (0.8, 1.2, 2.5)
    rows = evaluate_label_maps(_image(pred, spacing_xyz), _image(ref, spacing_xyz), tolerance_mm=1.5)
    assert [row["label"] for row in rows] == [1, 2, 3, 4]
    for row in rows:
        full = evaluate_masks(pred == row["label"], ref == row["label"], spacing_xyz[::-1], 1.5)
        for metric in METRICS:
            assert row[metric] == pytest.approx(full[metric], rel=1e-9, abs=1e-9), metric
        assert row["pred_voxels"] == np.count_nonzero(pred == row["label"])
        assert row["ref_voxels"] == np.count_nonzero(ref == row["label"])


def test_oblique_anisotropic_grid_matches_kdtree_on_physical_points():
    pred, ref = _random_labels(2), _random_labels(3)
    kwargs = {"spacing": (0.7, 1.9, 3.1), "direction": _oblique_direction(), "origin": (12.0, -40.0, 7.5)}
    pred_img, ref_img = _image(pred, **kwargs), _image(ref, **kwargs)
    rows = evaluate_label_maps(pred_img, ref_img, labels=[1, 3])
    for row in rows:
        p = _physical_surface_points(pred_img, pred == row["label"])
        r = _physical_surface_points(ref_img, ref == row["label"])
        d_pr, d_rp = cKDTree(r).query(p)[0], cKDTree(p).query(r)[0]
        assert row["msd"] == pytest.approx(max(d_pr.max(), d_rp.max()), rel=1e-6)
        assert row["asd"] == pytest.approx(np.concatenate([d_pr, d_rp]).mean(), rel=1e-6)
        hd95 = max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))
        assert row["hd95"] == pytest.approx(hd95, rel=1e-6)


def test_default_labels_are_those_present_and_absent_labels_follow_policy():
    pred, ref = np.zeros((4, 5, 6), np.uint8), np.zeros((4, 5, 6), np.uint8)
    pred[1:3, 1:3, 1:3] = 2
    ref[1:3, 1:3, 2:4] = 5
    rows = evaluate_label_maps(_image(pred), _image(ref), names={2: "liver"})
    assert [(r["label"], r["name"]) for r in rows] == [(2, "liver"), (5, "5")]
    assert rows[0]["dsc"] == 0 and rows[0]["msd"] == float("inf")
    absent = evaluate_label_maps(_image(pred), _image(ref), labels=[7])[0]
    assert absent["dsc"] == 1 and absent["msd"] == 0 and absent["pred_voxels"] == 0


def test_works_on_2d_label_maps():
    pred = np.zeros((20, 20), np.uint8)
    ref = np.zeros_like(pred)
    pred[5:10, 5:10] = 1
    ref[5:10, 6:11] = 1
    row = evaluate_label_maps(_image(pred, (0.5, 2.0)), _image(ref, (0.5, 2.0)))[0]
    assert row["msd"] == pytest.approx(0.5)
    assert row["dsc"] == pytest.approx(2 * 20 / 50)


@pytest.mark.parametrize(
    "change, message",
    [(lambda im: im.SetSpacing((1.0, 1.0, 1.5)), "spacing"),
     (lambda im: im.SetOrigin((0.0, 0.1, 0.0)), "origin"),
     (lambda im: im.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1)), "direction")],
)
def test_grid_mismatch_is_a_clear_error(change, message):
    pred, ref = _image(_random_labels(0)), _image(_random_labels(1))
    change(pred)
    with pytest.raises(SegDeepError, match=f"not on the grid.*{message}"):
        evaluate_label_maps(pred, ref)


def test_size_mismatch_and_non_integer_labels_are_errors():
    with pytest.raises(SegDeepError, match="size"):
        evaluate_label_maps(_image(np.zeros((3, 4, 5), np.uint8)), _image(np.zeros((3, 4, 6), np.uint8)))
    probabilities = _image(np.full((3, 4, 5), 0.3, np.float32))
    with pytest.raises(SegDeepError, match="non-integer"):
        evaluate_label_maps(probabilities, _image(np.zeros((3, 4, 5), np.float32)))
    with pytest.raises(SegDeepError, match="label values"):
        evaluate_label_maps(_image(np.full((3, 4, 5), -1, np.int16)), _image(np.zeros((3, 4, 5), np.int16)))


def test_float_label_maps_with_integer_values_are_accepted():
    array = _random_labels(4).astype(np.float32)
    rows = evaluate_label_maps(_image(array), _image(array))
    assert all(row["dsc"] == 1.0 and row["msd"] == 0.0 for row in rows)
