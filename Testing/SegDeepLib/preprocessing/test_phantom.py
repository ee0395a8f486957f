"""The synthetic CT phantom: determinism, geometry, anatomy sanity, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io import load_label_table
from SegDeepLib.preprocessing import body_mask, make_phantom
from SegDeepLib.preprocessing.phantom import HU, LABELS

SEEDS = (0, 1, 2, 3)
# plausible volumes (ml) for a small adult torso about 23 cm wide (the default field of view)
VOLUME_ML = {
    "liver": (400, 2000),
    "spleen": (50, 400),
    "kidney_right": (50, 300),
    "kidney_left": (50, 300),
    "pancreas": (15, 150),
    "urinary_bladder": (40, 500),
    "spine": (100, 700),
}


@pytest.fixture(scope="module")
def phantoms() -> dict[int, tuple[sitk.Image, sitk.Image]]:
    return {seed: make_phantom(seed=seed) for seed in SEEDS}


def centroid_mm(labels: sitk.Image, value: int) -> np.ndarray:
    """Physical (LPS) centroid of a label, via the image's own index -> point mapping."""
    k, j, i = np.argwhere(sitk.GetArrayViewFromImage(labels) == value).mean(axis=0)
    return np.array(labels.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k))))


def test_same_seed_same_phantom_other_seed_other_phantom(phantoms) -> None:
    ct, labels = make_phantom(seed=1)
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(ct), sitk.GetArrayViewFromImage(phantoms[1][0])
    )
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(labels), sitk.GetArrayViewFromImage(phantoms[1][1])
    )
    other = sitk.GetArrayViewFromImage(phantoms[2][1])
    assert np.mean(other != sitk.GetArrayViewFromImage(labels)) > 0.005


def test_geometry_and_types(phantoms) -> None:
    ct, labels = phantoms[0]
    assert ct.GetSize() == (128, 128, 96) and ct.GetSpacing() == (2.0, 2.0, 3.0)
    assert ct.GetPixelID() == sitk.sitkInt16 and labels.GetPixelID() == sitk.sitkUInt8
    assert ct.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert ct.GetOrigin() == labels.GetOrigin() and ct.GetSpacing() == labels.GetSpacing()
    centre = ct.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in ct.GetSize()])
    np.testing.assert_allclose(centre, 0.0, atol=1e-9)


def test_labels_follow_the_phantom_table(phantoms) -> None:
    table = {entry.name: entry.value for entry in load_label_table("phantom").labels}
    assert table == LABELS
    for _, labels in phantoms.values():
        assert set(np.unique(sitk.GetArrayViewFromImage(labels))) == {0, *LABELS.values()}


@pytest.mark.parametrize("seed", SEEDS)
def test_anatomy_is_where_it_belongs(phantoms, seed) -> None:
    """LPS: x grows to patient Left, y to Posterior, z to Superior."""
    _, labels = phantoms[seed]
    c = {name: centroid_mm(labels, value) for name, value in LABELS.items()}
    assert c["liver"][0] < c["spine"][0] < c["spleen"][0]  # liver on the right, spleen on the left
    assert c["kidney_right"][0] < c["spine"][0] < c["kidney_left"][0]
    assert c["kidney_right"][2] < c["kidney_left"][2]  # the right kidney sits lower
    assert c["spine"][1] > max(
        c[name][1] for name in ("liver", "pancreas", "urinary_bladder")
    )  # spine is posterior
    assert c["urinary_bladder"][2] < min(
        c[name][2] for name in ("kidney_left", "kidney_right", "pancreas")
    )
    assert c["liver"][2] > c["urinary_bladder"][2] + 100  # upper abdomen vs pelvis (mm)


@pytest.mark.parametrize("seed", SEEDS)
def test_volumes_are_plausible(phantoms, seed) -> None:
    _, labels = phantoms[seed]
    array = sitk.GetArrayViewFromImage(labels)
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    for name, (lo, hi) in VOLUME_ML.items():
        volume = np.count_nonzero(array == LABELS[name]) * voxel_ml
        assert lo <= volume <= hi, (name, volume)


def test_intensities_are_realistic(phantoms) -> None:
    ct, labels = phantoms[0]
    hu, lab = sitk.GetArrayViewFromImage(ct), sitk.GetArrayViewFromImage(labels)
    for name, tissue in (
        ("liver", "liver"),
        ("spleen", "spleen"),
        ("kidney_left", "kidney"),
        ("urinary_bladder", "bladder"),
    ):
        assert abs(np.median(hu[lab == LABELS[name]]) - HU[tissue]) < 10, name
    assert np.median(hu[lab == LABELS["spine"]]) > 200  # bone
    assert np.median(hu[0]) < -950  # air in the corners
    noise = hu[lab == LABELS["liver"]].std()
    assert 5 < noise < 25  # Gaussian noise is there, but organs stay separable


def test_body_mask_of_the_phantom_covers_every_label(phantoms) -> None:
    ct, labels = phantoms[3]
    mask = sitk.GetArrayFromImage(body_mask(ct))
    assert mask[sitk.GetArrayViewFromImage(labels) > 0].all()


def test_default_size_is_fast() -> None:
    times = []
    for _ in range(2):  # the best of two runs, so that a busy CI machine does not make it flaky
        start = time.perf_counter()
        make_phantom(seed=5)
        times.append(time.perf_counter() - start)
    assert min(times) < 1.0


def test_other_sizes_and_bad_arguments() -> None:
    ct, labels = make_phantom(shape=(40, 48, 56), spacing=(5.0, 4.0, 4.0), seed=7)
    assert ct.GetSize() == (56, 48, 40) and ct.GetSpacing() == (4.0, 4.0, 5.0)
    assert set(np.unique(sitk.GetArrayViewFromImage(labels))) >= {1, 2, 7}
    with pytest.raises(SegDeepError, match="phantom"):
        make_phantom(shape=(4, 64, 64))
    with pytest.raises(SegDeepError, match="phantom"):
        make_phantom(spacing=(1.0, 0.0, 1.0))
