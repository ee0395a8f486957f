"""Resampling: exact identity at the same spacing, exact way back, linear functions reproduced."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.preprocessing import (
    centred_grid,
    resample_labels_onehot,
    resample_to_reference,
    resample_to_spacing,
)


def rotation(angles=(0.3, -0.2, 0.5), flip=(1, -1, 1)) -> tuple:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return tuple((rz @ ry @ rx @ np.diag(flip)).flatten())


DIRECTIONS = {
    "identity": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "flipped": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "permuted": (0, 0, 1, 1, 0, 0, 0, -1, 0),
    "oblique": rotation(),
}


def make_image(array: np.ndarray, direction, spacing=(0.7, 1.3, 3.1)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 40.25, 100.125))
    image.SetDirection(direction)
    return image


def random_labels(shape=(8, 10, 12), values=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, values, size=shape).astype(np.uint8)


def assert_same_grid_exact(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    assert a.GetSpacing() == b.GetSpacing()
    assert a.GetOrigin() == b.GetOrigin()
    assert a.GetDirection() == b.GetDirection()


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_same_spacing_is_identity(direction) -> None:
    labels = make_image(random_labels(), direction)
    out = resample_to_spacing(labels, labels.GetSpacing(), "nearest")
    assert_same_grid_exact(out, labels)
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(out), sitk.GetArrayViewFromImage(labels)
    )


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_integer_upsampling_and_back_is_exact(direction) -> None:
    labels = make_image(random_labels(), direction)
    fine = resample_to_spacing(labels, [s / 2 for s in labels.GetSpacing()], "nearest")
    assert fine.GetSize() == tuple(2 * n for n in labels.GetSize())
    assert fine.GetDirection() == labels.GetDirection()
    back = resample_to_reference(fine, labels, "nearest")
    assert_same_grid_exact(back, labels)
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(labels)
    )
    assert back.GetPixelID() == labels.GetPixelID()


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_coarse_grid_goes_back_onto_the_reference_grid_exactly(direction) -> None:
    image = make_image(np.zeros((9, 11, 13), np.float32), direction)
    coarse = resample_to_spacing(image, (2.0, 2.5, 5.0), "linear")
    back = resample_to_reference(coarse, image, "linear")
    assert_same_grid_exact(back, image)


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_centred_grid_shares_the_centre(direction) -> None:
    image = make_image(np.zeros((9, 11, 13), np.float32), direction)
    grid = centred_grid(image, (2.0, 2.5, 5.0))
    assert grid.GetSize() == (round(13 * 0.7 / 2.0), round(11 * 1.3 / 2.5), round(9 * 3.1 / 5.0))

    def centre(img):
        return img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in img.GetSize()])

    np.testing.assert_allclose(centre(grid), centre(image), atol=1e-9)


def ramp(image: sitk.Image, coefficients=(0.5, -1.25, 2.0), offset=3.0) -> np.ndarray:
    """A linear function of the physical position at every voxel centre, computed point by point."""
    size = image.GetSize()
    out = np.empty(size[::-1], dtype=np.float64)
    for k in range(size[2]):
        for j in range(size[1]):
            for i in range(size[0]):
                point = image.TransformIndexToPhysicalPoint((i, j, k))
                out[k, j, i] = offset + float(np.dot(coefficients, point))
    return out


@pytest.mark.parametrize("interpolation", ["linear", "bspline"])
def test_interpolators_reproduce_linear_functions(interpolation) -> None:
    shape, spacing = (16, 18, 20), (1.0, 1.5, 2.0)
    image = make_image(np.zeros(shape, np.float32), DIRECTIONS["oblique"], spacing)
    image = make_image(ramp(image).astype(np.float32), DIRECTIONS["oblique"], spacing)
    out = resample_to_spacing(image, (1.3, 1.9, 2.3), interpolation)
    expected = ramp(out)
    got = sitk.GetArrayViewFromImage(out)
    # away from the border (nearest-voxel extrapolation; B-spline mirror boundary conditions)
    inner = (slice(6, -6),) * 3
    np.testing.assert_allclose(got[inner], expected[inner], atol=2e-3)


def test_onehot_linear_is_a_majority_vote_for_halving() -> None:
    """Halving an even grid averages 2x2x2 blocks: the one-hot argmax is their majority label."""
    array = random_labels(shape=(8, 10, 12), values=3, seed=3)
    labels = make_image(array, DIRECTIONS["oblique"])
    grid = centred_grid(labels, [2 * s for s in labels.GetSpacing()])
    out = sitk.GetArrayFromImage(resample_labels_onehot(labels, grid))
    blocks = array.reshape(4, 2, 5, 2, 6, 2).transpose(0, 2, 4, 1, 3, 5).reshape(4, 5, 6, 8)
    counts = np.stack([(blocks == v).sum(axis=-1) for v in range(3)], axis=-1)
    majority = counts.argmax(axis=-1)
    unique = np.sort(counts, axis=-1)[..., -1] > np.sort(counts, axis=-1)[..., -2]
    assert unique.sum() > 50
    np.testing.assert_array_equal(out[unique], majority[unique])
    assert out.dtype == array.dtype


def test_bad_arguments_are_clear_errors() -> None:
    image = make_image(np.zeros((4, 4, 4), np.float32), DIRECTIONS["identity"])
    with pytest.raises(SegDeepError, match="spacing"):
        resample_to_spacing(image, (1.0, 0.0, 1.0))
    with pytest.raises(SegDeepError, match="spacing"):
        resample_to_spacing(image, (1.0, 1.0))
    with pytest.raises(SegDeepError, match="interpolation 'cubic'"):
        resample_to_spacing(image, (1.0, 1.0, 1.0), "cubic")
