"""preprocess / preprocess_label / Preprocessed.to_input_grid: the contract and its exact inverse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io import read_image, to_canonical
from SegDeepLib.preprocessing import dilate_foreground, preprocess, preprocess_label
from Testing.conftest import shared_file
from Testing.SegDeepLib.preprocessing.test_resample import DIRECTIONS, assert_same_grid_exact

CT_DIR = "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/"
WINDOW = {"kind": "window", "window": [-200.0, 300.0]}


def body_case(
    direction, spacing=(0.9, 1.4, 2.5), shape=(14, 18, 22)
) -> tuple[sitk.Image, sitk.Image]:
    """A CT-like image (air around an ellipsoid 'body' holding two 'organs') and its labels."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    body = (z / 0.65) ** 2 + (y / 0.6) ** 2 + (x / 0.7) ** 2 <= 1
    organ1 = (z / 0.4) ** 2 + ((y - 0.1) / 0.3) ** 2 + ((x + 0.25) / 0.25) ** 2 <= 1
    organ2 = (z / 0.3) ** 2 + ((y + 0.2) / 0.2) ** 2 + ((x - 0.35) / 0.2) ** 2 <= 1
    hu = np.where(body, 40.0, -1000.0) + 60.0 * organ1 + 120.0 * organ2
    labels = (organ1 * 1 + organ2 * 2 * ~organ1).astype(np.uint8)
    images = []
    for array in (hu.astype(np.int16), labels):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        image.SetOrigin((-20.5, 13.25, 7.125))
        image.SetDirection(direction)
        images.append(image)
    return images[0], images[1]


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
@pytest.mark.parametrize("factor", [1.0, 0.5])  # same spacing, and twice finer in canonical order
def test_label_round_trip_is_exact(direction, factor) -> None:
    ct, labels = body_case(direction)
    _, layout = to_canonical(ct)
    spacing = [s * factor for s in layout.spacing_zyx]
    pre = preprocess(ct, {"spacing": spacing, "intensity": WINDOW, "crop": "body", "margin_mm": 1})
    assert pre.spacing_zyx == tuple(spacing)
    net_labels = preprocess_label(labels, pre)
    assert net_labels.shape == pre.array.shape[1:] and net_labels.dtype == np.uint8
    back = pre.to_input_grid(net_labels, is_label=True)
    assert_same_grid_exact(back, labels)
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(labels)
    )
    assert pre.box.shape != pre.box.full_shape  # the crop did remove the air around the body


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_network_array_is_canonical(direction) -> None:
    ct, _ = body_case(direction)
    pre = preprocess(ct, {"intensity": {"kind": "none"}})
    expected, layout = to_canonical(ct)
    assert pre.array.shape == (1,) + expected.shape and pre.array.dtype == np.float32
    np.testing.assert_array_equal(pre.array[0], expected)
    assert pre.spacing_zyx == layout.spacing_zyx
    assert pre.region is None


def nearest_indices(n: int, s_in: float, m: int, s_out: float) -> np.ndarray:
    """Crop index -> network index -> crop index along one axis, nearest neighbour both ways,
    for a network grid of ``m`` voxels centred on the ``n`` crop voxels (written out independently)."""
    offset = ((n - 1) * s_in - (m - 1) * s_out) / 2.0
    to_net = np.clip(np.floor((np.arange(n) * s_in - offset) / s_out + 0.5), 0, m - 1)
    return np.clip(np.floor((offset + to_net * s_out) / s_in + 0.5), 0, n - 1).astype(int)


def test_resampled_round_trip_matches_an_independent_nearest_computation() -> None:
    ct, labels = body_case(DIRECTIONS["oblique"], shape=(28, 36, 44), spacing=(0.5, 0.7, 1.2))
    target = (1.3, 0.9, 0.8)  # coarser along z, finer in-plane, non-integer ratios
    pre = preprocess(ct, {"spacing": list(target), "intensity": WINDOW, "crop": "body"})
    canonical, layout = to_canonical(labels, dtype=None)
    shape = tuple(round(n * s / t) for n, s, t in zip(pre.box.shape, layout.spacing_zyx, target))
    assert pre.array.shape[1:] == shape
    back = pre.to_input_grid(preprocess_label(labels, pre), is_label=True)
    assert_same_grid_exact(back, labels)
    index = [
        nearest_indices(n, s, m, t)
        for n, s, m, t in zip(pre.box.shape, layout.spacing_zyx, shape, target)
    ]
    expected = np.zeros_like(canonical)
    expected[pre.box.slices] = canonical[pre.box.slices][np.ix_(*index)]
    got, _ = to_canonical(back, dtype=None)
    np.testing.assert_array_equal(got, expected)
    assert 0 < np.mean(got != canonical) < 0.05  # not a trivial identity


def test_probabilities_go_back_with_background_outside_the_crop() -> None:
    ct, labels = body_case(DIRECTIONS["permuted"])
    pre = preprocess(
        ct, {"spacing": [1.0, 1.0, 1.0], "intensity": WINDOW, "crop": "body", "margin_mm": 0}
    )
    one_hot = np.eye(3, dtype=np.float32)[preprocess_label(labels, pre)].transpose(3, 0, 1, 2)
    probabilities = pre.to_input_grid(one_hot, is_label=False)
    assert probabilities.shape == (3,) + sitk.GetArrayViewFromImage(ct).shape
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(
        probabilities.sum(axis=0), 1.0, atol=1e-5
    )  # linear keeps the partition
    inside = sitk.GetArrayFromImage(dilate_foreground(labels, 0)) > 0
    outside = sitk.GetArrayFromImage(preprocess_region(pre)) == 0
    assert outside.sum() > 100 and np.all(probabilities[0][outside] == 1.0)
    argmax = probabilities.argmax(axis=0)
    agreement = np.mean(argmax[inside] == sitk.GetArrayViewFromImage(labels)[inside])
    assert agreement > 0.8
    image = pre.image_on_input_grid(probabilities[1])
    assert_same_grid_exact(image, ct)


def preprocess_region(pre) -> sitk.Image:
    """The crop box of ``pre`` as a mask on the input grid (via the same layout)."""
    full = np.zeros(pre.box.full_shape, bool)
    full[pre.box.slices] = True
    return pre.image_on_input_grid(pre.layout.from_array(full))


def test_crop_to_a_given_region_mask() -> None:
    ct, labels = body_case(DIRECTIONS["flipped"])
    c2 = dilate_foreground(labels, 1)
    pre = preprocess(ct, {"intensity": WINDOW, "crop": "mask", "margin_mm": 0}, region=c2)
    c2_canonical, _ = to_canonical(c2, dtype=None)
    hits = np.argwhere(c2_canonical)
    assert pre.box.start == tuple(hits.min(axis=0)) and pre.box.stop == tuple(hits.max(axis=0) + 1)
    np.testing.assert_array_equal(pre.region, c2_canonical[pre.box.slices] > 0)
    with pytest.raises(SegDeepError, match="needs a region mask"):
        preprocess(ct, {"intensity": WINDOW, "crop": "mask"})


def test_zscore_inside_the_region_and_dual_channel() -> None:
    ct, _ = body_case(DIRECTIONS["identity"])
    pre = preprocess(ct, {"intensity": {"kind": "zscore", "mask": "region"}, "crop": "body"})
    inside = pre.array[0][pre.region]
    assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-4
    pre = preprocess(ct, {"intensity": {"kind": "dual_channel", "level": 100, "width": 20}})
    assert pre.array.shape[0] == 2 and pre.array.min() >= 0 and pre.array.max() <= 1


def test_onehot_linear_labels() -> None:
    ct, labels = body_case(DIRECTIONS["identity"])
    pre = preprocess(
        ct,
        {"spacing": [2.0, 3.0, 4.0], "intensity": WINDOW, "label_interpolation": "onehot_linear"},
    )
    smooth = preprocess_label(labels, pre)
    nearest = preprocess_label(labels, pre, interpolation="nearest")
    assert smooth.shape == nearest.shape == pre.array.shape[1:]
    assert set(np.unique(smooth)) <= {0, 1, 2}
    assert 0.8 < np.mean(smooth == nearest) < 1.0


def test_label_map_on_another_grid_is_refused() -> None:
    ct, labels = body_case(DIRECTIONS["oblique"])
    pre = preprocess(ct, {"intensity": WINDOW})
    moved = sitk.Image(labels)
    moved.SetOrigin(tuple(o + 1.0 for o in labels.GetOrigin()))
    with pytest.raises(SegDeepError, match="label map: not on the image's grid.*origin"):
        preprocess_label(moved, pre)
    nudged = sitk.Image(labels)
    nudged.SetOrigin(tuple(o + 1e-6 for o in labels.GetOrigin()))  # float32 header rounding is fine
    preprocess_label(nudged, pre)
    with pytest.raises(SegDeepError, match="size"):
        preprocess_label(labels[1:], pre)


def test_bad_inputs_are_clear_errors() -> None:
    ct, _ = body_case(DIRECTIONS["identity"])
    with pytest.raises(SegDeepError, match="preprocessing spec"):
        preprocess(ct, {"intensity": {"kind": "window"}})
    nan = sitk.Cast(ct, sitk.sitkFloat32)
    nan[1, 1, 1] = float("nan")
    with pytest.raises(SegDeepError, match="NaN"):
        preprocess(nan, None)
    with pytest.raises(SegDeepError, match="3D"):
        preprocess(ct[:, :, 3], None)
    air = sitk.Image(ct.GetSize(), sitk.sitkInt16) - 1000
    with pytest.raises(SegDeepError, match="crop region is empty"):
        preprocess(air, {"crop": "body"})


def test_spec_is_stored_validated_and_json_able() -> None:
    ct, _ = body_case(DIRECTIONS["identity"])
    pre = preprocess(ct, {"spacing": [2, 2, 2], "intensity": WINDOW})
    assert json.loads(json.dumps(pre.spec)) == pre.spec
    assert pre.spec["margin_mm"] == 10.0 and pre.spec["crop"] is None


def test_real_ct_round_trip() -> None:
    ct = read_image(shared_file(CT_DIR + "example_ct.nii.gz"))
    seg = read_image(shared_file(CT_DIR + "example_seg_fast_force_split.nii.gz"))
    # same spacing: exact; body crop keeps every labelled voxel
    pre = preprocess(ct, {"intensity": WINDOW, "crop": "body"})
    back = pre.to_input_grid(preprocess_label(seg, pre), is_label=True)
    assert_same_grid_exact(back, seg)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(seg))
    # 6 mm there and back: geometry exact, large organs kept (liver 5, spleen 1 in TotalSegmentator)
    pre = preprocess(ct, {"spacing": [6.0, 6.0, 6.0], "intensity": WINDOW, "crop": "body"})
    back = sitk.GetArrayFromImage(pre.to_input_grid(preprocess_label(seg, pre), is_label=True))
    reference = sitk.GetArrayViewFromImage(seg)
    for value in (1, 5):
        a, b = back == value, reference == value
        assert 2 * np.sum(a & b) / (a.sum() + b.sum()) > 0.85


def test_real_mr_zscore_inside_nonzero_voxels() -> None:
    mr = read_image(shared_file("totalsegmentator-testfiles/mr_abdomen_3mm/example_mr_sm.nii.gz"))
    pre = preprocess(mr, {"intensity": {"kind": "zscore", "mask": "nonzero"}})
    raw, _ = to_canonical(mr)
    inside = pre.array[0][raw != 0]
    assert abs(inside.mean()) < 1e-3 and abs(inside.std() - 1) < 1e-3
    expected = (raw - raw[raw != 0].mean()) / raw[raw != 0].std()
    np.testing.assert_allclose(pre.array[0], expected, rtol=1e-4, atol=1e-4)


def test_singleton_4d_image_is_accepted() -> None:
    ct, _ = body_case(DIRECTIONS["identity"])
    four = sitk.JoinSeries([ct])
    assert four.GetDimension() == 4
    pre = preprocess(four, {"intensity": WINDOW})
    assert pre.array.shape == (1,) + to_canonical(ct)[0].shape
