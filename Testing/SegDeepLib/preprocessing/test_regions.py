"""Candidate regions C1/C2, bounding boxes, crop and paste."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io import from_canonical, read_image, to_canonical
from SegDeepLib.preprocessing import (
    CropBox,
    body_mask,
    body_mask_array,
    crop,
    crop_image,
    dilate_foreground,
    margin_voxels,
    paste,
    paste_image,
    region_box,
)
from Testing.conftest import shared_file
from Testing.SegDeepLib.preprocessing.test_resample import DIRECTIONS

CT_DIR = "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/"


def components(mask: np.ndarray) -> int:
    image = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), False)
    return int(sitk.GetArrayViewFromImage(image).max())


def test_body_mask_on_real_ct_covers_every_organ_and_is_one_component() -> None:
    ct = read_image(shared_file(CT_DIR + "example_ct.nii.gz"))
    seg = read_image(shared_file(CT_DIR + "example_seg_fast_force_split.nii.gz"))
    mask = sitk.GetArrayFromImage(body_mask(ct, threshold=-500))
    labels = sitk.GetArrayFromImage(seg)
    assert mask.shape == labels.shape
    assert components(mask) == 1
    for value in np.unique(labels[labels > 0]):
        organ = labels == value
        assert mask[organ].all(), (
            f"label {value}: {np.count_nonzero(organ & (mask == 0))} voxels outside C1"
        )
    assert 0.2 < mask.mean() < 0.95  # the body, not the whole field of view
    # what is left out is air, apart from a few voxels of objects outside the body (table, cables)
    outside = sitk.GetArrayViewFromImage(ct)[mask == 0]
    assert np.mean(outside < -500) > 0.95  # measured: 0.985


def body_phantom() -> np.ndarray:
    """Air with a 'body' ball that holds a gas pocket, and a separate small 'table' slab."""
    z, y, x = np.mgrid[:20, :30, :30]
    hu = np.full((20, 30, 30), -1000.0)
    hu[(z - 10) ** 2 + (y - 13) ** 2 + (x - 15) ** 2 <= 8**2] = 40.0
    hu[(z - 10) ** 2 + (y - 13) ** 2 + (x - 15) ** 2 <= 2**2] = -900.0  # gas inside the body
    hu[:, 26:28, 5:25] = 200.0  # table, not touching the body
    return hu


def test_body_mask_fills_holes_and_drops_the_table() -> None:
    hu = body_phantom()
    mask = body_mask_array(hu)
    z, y, x = np.mgrid[:20, :30, :30]
    expected = ((z - 10) ** 2 + (y - 13) ** 2 + (x - 15) ** 2 <= 8**2).astype(np.uint8)
    np.testing.assert_array_equal(mask, expected)
    no_fill = body_mask_array(hu, fill_holes=False, largest=False)
    assert no_fill[10, 13, 15] == 0 and no_fill[:, 26:28, 5:25].all()


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_body_mask_image_fills_axial_slices_on_any_grid(direction) -> None:
    canonical = body_phantom()
    # a tube of air along S-I through the body: a hole in every axial slice, open in 3D
    canonical[:, 12:15, 14:17] = -1000.0
    cube = sitk.Image([4, 4, 4], sitk.sitkInt16)
    cube.SetDirection(direction)
    permutation = to_canonical(cube)[1].permutation  # depends on the direction only
    stored_shape = [0, 0, 0]
    for axis, source in enumerate(permutation):
        stored_shape[source] = canonical.shape[axis]
    grid = sitk.GetImageFromArray(np.zeros(stored_shape, np.int16))
    grid.SetDirection(direction)
    _, layout = to_canonical(grid)
    # the same anatomy stored in another voxel order
    stored = sitk.GetImageFromArray(
        np.ascontiguousarray(layout.from_array(canonical)).astype(np.int16)
    )
    stored.CopyInformation(grid)
    mask = body_mask(stored)
    got, _ = to_canonical(mask, dtype=None)
    np.testing.assert_array_equal(got, body_mask_array(canonical))
    assert got[10, 13, 15] == 1  # the tube is filled slice by slice


def brute_force_dilation(
    foreground: np.ndarray, radius: float, spacing=(1.0, 1.0, 1.0)
) -> np.ndarray:
    points = np.argwhere(foreground) * np.asarray(spacing)
    out = np.zeros(foreground.shape, np.uint8)
    for index in itertools.product(*(range(n) for n in foreground.shape)):
        d2 = ((points - np.asarray(index) * np.asarray(spacing)) ** 2).sum(axis=1)
        out[index] = d2.min() <= radius**2 + 1e-9
    return out


@pytest.mark.parametrize(
    "radius, in_mm, spacing",
    [
        (3, False, (1.0, 1.0, 1.0)),
        (3, False, (2.0, 0.7, 1.1)),
        (2.5, True, (2.0, 0.7, 1.1)),
        (0, False, (1.0, 1.0, 1.0)),
    ],
)
def test_dilation_matches_a_brute_force_distance(radius, in_mm, spacing) -> None:
    labels = np.zeros((9, 11, 12), np.uint8)
    labels[4, 5, 6] = 2
    labels[2, 2, 2] = 1
    labels[6:8, 8:10, 3] = 5
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(spacing[::-1])
    image.SetDirection(DIRECTIONS["oblique"])
    got = dilate_foreground(image, radius, in_mm=in_mm)
    assert got.GetSize() == image.GetSize() and got.GetOrigin() == image.GetOrigin()
    assert got.GetDirection() == image.GetDirection()
    expected = brute_force_dilation(labels > 0, radius, spacing if in_mm else (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(got), expected)


def test_dilation_of_nothing_is_empty() -> None:
    empty = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8))
    assert not sitk.GetArrayFromImage(dilate_foreground(empty, 3)).any()
    with pytest.raises(SegDeepError, match="radius"):
        dilate_foreground(empty, -1)


def test_margin_voxels_round_up() -> None:
    assert margin_voxels(10, (3.0, 0.8, 2.5)) == (4, 13, 4)
    assert margin_voxels(0, (3.0, 1.0, 1.0)) == (0, 0, 0)
    assert margin_voxels(6, (3.0, 2.0, 1.5)) == (2, 3, 4)  # exact multiples are not rounded up
    with pytest.raises(SegDeepError, match="margin"):
        margin_voxels(-1, (1.0, 1.0, 1.0))


def test_region_box_is_the_bounding_box_plus_margin_clipped() -> None:
    mask = np.zeros((10, 12, 14), bool)
    mask[3, 4:6, 1] = True
    mask[5, 7, 9] = True
    box = region_box(mask, (1, 2, 3))
    assert box.start == (2, 2, 0) and box.stop == (7, 10, 13) and box.full_shape == (10, 12, 14)
    assert box.shape == (5, 8, 13)
    assert region_box(mask, 0).slices == (slice(3, 6), slice(4, 8), slice(1, 10))
    with pytest.raises(SegDeepError, match="empty"):
        region_box(np.zeros((3, 3, 3)), 1)


def test_crop_then_paste_is_an_exact_inverse() -> None:
    rng = np.random.default_rng(0)
    full = rng.normal(size=(2, 10, 12, 14)).astype(np.float32)
    box = CropBox((2, 3, 4), (7, 9, 13), (10, 12, 14))
    cropped = crop(full, box)
    assert cropped.shape == (2, 5, 6, 9)
    np.testing.assert_array_equal(cropped, full[:, 2:7, 3:9, 4:13])
    back = paste(cropped, box, fill=[1.0, -2.0])
    inside = np.zeros((10, 12, 14), bool)
    inside[box.slices] = True
    np.testing.assert_array_equal(back[:, inside], full[:, inside])
    assert np.all(back[0, ~inside] == 1.0) and np.all(back[1, ~inside] == -2.0)
    # crop of the paste gives the crop back, and a full box is a no-op
    np.testing.assert_array_equal(crop(back, box), cropped)
    whole = CropBox.full(full.shape[1:])
    np.testing.assert_array_equal(paste(crop(full, whole), whole), full)
    with pytest.raises(ValueError):
        paste(cropped[:, :-1], box)


def test_body_mask_image_keeps_geometry() -> None:
    image = sitk.GetImageFromArray(body_phantom().astype(np.int16))
    image.SetDirection(DIRECTIONS["oblique"])
    image.SetSpacing((0.8, 1.2, 2.5))
    image.SetOrigin((3.0, -4.0, 5.0))
    mask = body_mask(image)
    assert (mask.GetSize(), mask.GetSpacing(), mask.GetOrigin(), mask.GetDirection()) == (
        image.GetSize(),
        image.GetSpacing(),
        image.GetOrigin(),
        image.GetDirection(),
    )
    array, layout = to_canonical(image)
    expected = from_canonical(body_mask_array(array), layout)
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(mask), sitk.GetArrayViewFromImage(expected)
    )


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_crop_image_then_paste_image_is_exact(direction) -> None:
    rng = np.random.default_rng(2)
    image = sitk.GetImageFromArray(rng.integers(-1000, 1000, size=(12, 14, 16)).astype(np.int16))
    image.SetSpacing((0.8, 1.1, 3.0))
    image.SetOrigin((1.5, -2.25, 30.0))
    image.SetDirection(direction)
    region_array = np.zeros((12, 14, 16), np.uint8)
    region_array[5:7, 4:9, 6:8] = 1
    region = sitk.GetImageFromArray(region_array)
    region.CopyInformation(image)
    cropped, box = crop_image(image, region, margin_mm=3.0)
    assert box.start == (4, 1, 2) and box.stop == (8, 12, 12)  # margins 1, 3, 4 voxels (k, j, i)
    # the cropped voxels sit at the same physical points as in the full image
    corner = image.TransformIndexToPhysicalPoint((2, 1, 4))
    np.testing.assert_allclose(cropped.GetOrigin(), corner, atol=1e-9)
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(cropped), sitk.GetArrayViewFromImage(image)[box.slices]
    )
    back = paste_image(cropped, box, image, fill=-1024)
    assert (back.GetOrigin(), back.GetSpacing(), back.GetDirection()) == (
        image.GetOrigin(),
        image.GetSpacing(),
        image.GetDirection(),
    )
    expected = np.full((12, 14, 16), -1024, np.int16)
    expected[box.slices] = sitk.GetArrayViewFromImage(image)[box.slices]
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), expected)
    _, box_vox = crop_image(image, region, margin=(0, 1, 2))
    assert box_vox.start == (5, 3, 4) and box_vox.stop == (7, 10, 10)
    moved = sitk.Image(region)
    moved.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(SegDeepError, match="not on the image's grid"):
        crop_image(image, moved)
