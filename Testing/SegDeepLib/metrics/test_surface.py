"""Surface distances against brute force (all pairs of physical points), scipy and SimpleITK."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from SegDeepLib.metrics.surface import distance_metrics, distance_to_set, surface_mask

CROSS_3D = ndimage.generate_binary_structure(3, 1)


def _scipy_surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def _brute_force(pred, ref, spacing, tol):
    """All-pairs distances between surface/voxel point sets in mm (numpy broadcasting)."""
    spacing = np.asarray(spacing, float)
    sp = np.argwhere(_scipy_surface(pred)) * spacing
    sr = np.argwhere(_scipy_surface(ref)) * spacing
    d_pr = _pairwise(sp, sr).min(1)
    d_rp = _pairwise(sr, sp).min(1)
    vp, vr = np.argwhere(pred) * spacing, np.argwhere(ref) * spacing
    both = np.concatenate([d_pr, d_rp])
    return {
        "asd": both.mean(),
        "msd": both.max(),
        "hd95": max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)),
        "nsd": np.mean(both <= tol),
        "avd": max(_pairwise(vp, vr).min(1).mean(), _pairwise(vr, vp).min(1).mean()),
    }


def _blob(rng, shape, n):
    """A random smooth-ish blob: union of a few random boxes, touching the border sometimes."""
    mask = np.zeros(shape, bool)
    for _ in range(n):
        lo = [rng.integers(0, s - 2) for s in shape]
        hi = [rng.integers(a + 1, s + 1) for a, s in zip(lo, shape)]
        mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def test_surface_matches_scipy_erosion():
    rng = np.random.default_rng(1)
    for _ in range(5):
        mask = rng.random((7, 9, 8)) < 0.6
        np.testing.assert_array_equal(surface_mask(mask), _scipy_surface(mask))
    mask2d = rng.random((12, 10)) < 0.5
    np.testing.assert_array_equal(surface_mask(mask2d), _scipy_surface(mask2d))


def test_distance_to_set_matches_scipy_edt():
    rng = np.random.default_rng(2)
    target = rng.random((9, 11, 10)) < 0.05
    spacing = (2.5, 0.7, 1.3)
    expected = ndimage.distance_transform_edt(~target, sampling=spacing)
    np.testing.assert_allclose(distance_to_set(target, spacing), expected, rtol=1e-5, atol=1e-5)
    dense = _blob(rng, (9, 11, 10), 3)  # large solid blocks: most voxels are not on the contour
    expected = ndimage.distance_transform_edt(~dense, sampling=spacing)
    np.testing.assert_allclose(distance_to_set(dense, spacing), expected, rtol=1e-5, atol=1e-5)


def test_nsd_counts_distances_exactly_at_the_tolerance():
    pred = np.zeros((1, 1, 12), bool)
    ref = np.zeros_like(pred)
    pred[..., 2:5] = True
    ref[..., 5:8] = True  # every voxel is on the surface: distances 0.7, 1.4 and 2.1 mm each way
    spacing = (1.0, 1.0, 0.7)
    assert distance_metrics(pred, ref, spacing, tolerance_mm=3 * 0.7)["nsd"] == 1.0
    assert distance_metrics(pred, ref, spacing, tolerance_mm=2.0)["nsd"] == pytest.approx(4 / 6)


@pytest.mark.parametrize("seed", range(6))
def test_random_blobs_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape = (8, 12, 11)
    spacing = (3.0, 0.8, 1.1) if seed % 2 else (1.0, 1.0, 1.0)
    pred, ref = _blob(rng, shape, 3), _blob(rng, shape, 3)
    got = distance_metrics(pred, ref, spacing, tolerance_mm=1.5)
    expected = _brute_force(pred, ref, spacing, 1.5)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key


def test_2d_masks_match_brute_force():
    rng = np.random.default_rng(7)
    pred, ref = _blob(rng, (20, 17), 2), _blob(rng, (20, 17), 2)
    got = distance_metrics(pred, ref, (0.5, 2.0), tolerance_mm=1.0)
    for key, value in _brute_force(pred, ref, (0.5, 2.0), 1.0).items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key


def test_hausdorff_matches_simpleitk_filter():
    rng = np.random.default_rng(3)
    spacing_zyx = (2.0, 0.9, 1.4)
    pred, ref = _blob(rng, (10, 14, 12), 3), _blob(rng, (10, 14, 12), 3)
    images = []
    for mask in (_scipy_surface(pred), _scipy_surface(ref)):
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.SetSpacing(spacing_zyx[::-1])
        images.append(image)
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(*images)
    got = distance_metrics(pred, ref, spacing_zyx)
    assert got["msd"] == pytest.approx(hausdorff.GetHausdorffDistance(), rel=1e-6)


def test_shifted_cube_hand_computed():
    # A 4x4x4 cube and a copy shifted by two slices of 2.5 mm. Each has 56 surface voxels. From the
    # first cube's surface to the second's: top ring (12) and z=4 ring (12) at 0 mm, the 4 top-face
    # centres at 1 mm (in-plane to the ring), the z=3 ring (12) at 2.5 mm, the bottom face (16) at
    # 5 mm; the other direction is symmetric.
    pred = np.zeros((12, 10, 10), bool)
    ref = np.zeros_like(pred)
    pred[2:6, 3:7, 3:7] = True
    ref[4:8, 3:7, 3:7] = True
    got = distance_metrics(pred, ref, (2.5, 1.0, 1.0), tolerance_mm=2.0)
    assert got["msd"] == pytest.approx(5.0)
    assert got["hd95"] == pytest.approx(5.0)
    assert got["asd"] == pytest.approx((4 * 1.0 + 12 * 2.5 + 16 * 5.0) / 56)
    assert got["nsd"] == pytest.approx(28 / 56)
    # AVD over all voxels: 16 voxels at 5 mm and 16 at 2.5 mm outside the other cube, 32 inside
    assert got["avd"] == pytest.approx((16 * 5.0 + 16 * 2.5) / 64)


def test_concentric_cubes_hand_computed():
    outer = np.zeros((12, 12, 12), bool)
    inner = np.zeros_like(outer)
    outer[2:10, 2:10, 2:10] = True
    inner[4:8, 4:8, 4:8] = True
    got = distance_metrics(inner, outer, (1.0, 1.0, 1.0), tolerance_mm=2.0)
    # farthest: an outer corner, (2, 2, 2) voxels from the inner corner
    assert got["msd"] == pytest.approx(math.sqrt(12))
    # all 56 inner surface voxels are 2 mm from the outer surface; of the 8^3 - 6^3 = 296 outer
    # surface voxels, only the 6 x 16 facing an inner face are within 2 mm
    assert got["nsd"] == pytest.approx((56 + 96) / (56 + 296))
    # AVD: the inner cube lies inside the outer one (0), so it is the mean over outer voxels
    coords = np.argwhere(outer)
    nearest = np.clip(coords, 4, 7)
    assert got["avd"] == pytest.approx(np.linalg.norm(coords - nearest, axis=1).mean())


@pytest.mark.parametrize(
    "pred_empty, ref_empty, expected",
    [(True, True, {"asd": 0, "msd": 0, "hd95": 0, "nsd": 1, "avd": 0}),
     (True, False, {"asd": math.inf, "msd": math.inf, "hd95": math.inf, "nsd": 0, "avd": math.inf}),
     (False, True, {"asd": math.inf, "msd": math.inf, "hd95": math.inf, "nsd": 0, "avd": math.inf})],
)
def test_empty_policy(pred_empty, ref_empty, expected):
    full = np.zeros((5, 5, 5), bool)
    full[1:3, 1:3, 1:3] = True
    empty = np.zeros_like(full)
    got = distance_metrics(empty if pred_empty else full, empty if ref_empty else full, (1, 1, 1))
    assert got == expected


def test_object_touching_border_has_a_surface_there():
    pred = np.ones((3, 3, 3), bool)
    assert surface_mask(pred).sum() == 26
    ref = pred.copy()
    ref[0] = False
    got = distance_metrics(pred, ref, (1.0, 1.0, 1.0))
    assert got["msd"] == pytest.approx(1.0)


def test_shape_and_spacing_checks():
    with pytest.raises(ValueError):
        distance_metrics(np.ones((2, 2, 2)), np.ones((2, 2, 3)), (1, 1, 1))
    with pytest.raises(ValueError):
        distance_metrics(np.ones((2, 2, 2)), np.ones((2, 2, 2)), (1, 1))
