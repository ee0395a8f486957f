"""Augmentation: B-spline field, exact reference transforms, label values preserved, intensity formulas."""

from __future__ import annotations

import numpy as np
import pytest

from SegDeepLib.data.augment import (
    AugmentSettings,
    IntensityParams,
    SpatialParams,
    apply_class_shift,
    apply_intensity,
    apply_spatial,
    bspline_weights,
    elastic_field,
    sample_class_shift,
    sample_spatial,
    source_coordinates,
)


def test_bspline_partition_of_unity_and_reference_values():
    w = bspline_weights(64, 5, 32)
    assert np.allclose(w.sum(1), 1.0)
    # at a control point the cubic B-spline weights are 1/6, 4/6, 1/6
    assert np.allclose(w[32, 1:4], [1 / 6, 4 / 6, 1 / 6])


def test_elastic_field_reproduces_constant_and_linear_displacements():
    shape = (6, 6, 7)
    ctrl = np.full((3, *shape), 2.5, np.float32)
    assert np.allclose(elastic_field(ctrl, (40, 48, 64), 16), 2.5, atol=1e-5)
    # cubic B-splines reproduce linear functions: control values (j - 1) * s give displacement x
    s = 8
    lin = np.zeros((3, 5, 6, 7), np.float32)
    lin[2] = ((np.arange(7) - 1) * s)[None, None, :] * 0.1
    field = elastic_field(lin, (16, 24, 30), s)
    assert np.allclose(field[2], 0.1 * np.arange(30)[None, None, :], atol=1e-4)


def test_sampled_elastic_within_bounds_and_in_plane():
    rng = np.random.default_rng(0)
    s = AugmentSettings(elastic_probability=1.0, elastic_grid_spacing=24, elastic_max_displacement=4.0,
                        in_plane_only=True)
    params = sample_spatial(rng, s, (16, 48, 48))
    assert params.elastic is not None and np.all(params.elastic[0] == 0)
    assert np.abs(params.elastic).max() <= 4.0
    field = elastic_field(params.elastic, (16, 48, 48), 24)
    assert np.abs(field).max() <= 4.0 + 1e-5


def test_identity_is_a_crop_with_padding():
    vol = np.arange(5 * 6 * 7, dtype=np.float32).reshape(1, 5, 6, 7)
    img, (_lab,) = apply_spatial(SpatialParams(), (2, 3, 3), (3, 4, 4), vol, [vol[0].astype(np.int64)], [0])
    assert np.array_equal(img[0], vol[0, 1:4, 2:6, 2:6])  # centre 3, 4 voxels: 1.5 rounds up
    edge, _ = apply_spatial(SpatialParams(), (0, 0, 0), (3, 3, 3), vol, [], [])
    assert edge[0, 0, 0, 0] == 0 and edge[0, 1, 1, 1] == vol[0, 0, 0, 0]


def test_rotation_90_in_plane_matches_rot90():
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(1, 5, 9, 9)).astype(np.float32)
    params = SpatialParams(angles=(np.pi / 2, 0.0, 0.0))
    img, _ = apply_spatial(params, (2, 4, 4), (5, 9, 9), vol, [], [])
    ref = np.rot90(vol[0], k=1, axes=(1, 2))
    direct = np.rot90(vol[0], k=-1, axes=(1, 2))
    assert np.allclose(img[0], ref, atol=1e-4) or np.allclose(img[0], direct, atol=1e-4)


def test_scaling_by_two_samples_every_other_voxel():
    vol = np.arange(16 * 16 * 16, dtype=np.float32).reshape(1, 16, 16, 16)
    params = SpatialParams(scale=(0.5, 0.5, 0.5))  # zoom out: output step 2 voxels in the source
    img, _ = apply_spatial(params, (7.5, 7.5, 7.5), (4, 4, 4), vol, [], [])
    coords = source_coordinates(params, (4, 4, 4), (7.5, 7.5, 7.5))
    assert np.allclose(coords[2, 0, 0], [4.5, 6.5, 8.5, 10.5])
    # linear data is reproduced exactly by linear interpolation
    expected = coords[0] * 256 + coords[1] * 16 + coords[2]
    assert np.allclose(img[0], expected, atol=1e-2)


def test_labels_keep_only_source_values_under_elastic_and_rotation():
    rng = np.random.default_rng(2)
    blocks = rng.choice([0, 3, 7], size=(3, 5, 5)).astype(np.uint8)
    labels = np.kron(blocks, np.ones((4, 4, 4), np.uint8))  # piecewise constant in 4-voxel cubes
    vol = labels[None].astype(np.float32)
    s = AugmentSettings(elastic_probability=1.0, elastic_grid_spacing=8, elastic_max_displacement=3,
                        affine_probability=1.0, rotation_deg=30, scale_range=(0.8, 1.2))
    params = sample_spatial(rng, s, (10, 16, 16))
    img, (lab,) = apply_spatial(params, (6, 10, 10), (10, 16, 16), vol, [labels], [0])
    assert set(np.unique(lab)) <= {0, 3, 7}
    assert lab.dtype == np.uint8
    # brute-force reference: the label of the nearest source voxel (0 outside the volume)
    coords = np.round(source_coordinates(params, (10, 16, 16), (6, 10, 10))).astype(int)
    inside = np.all((coords >= 0) & (coords < np.array(labels.shape).reshape(3, 1, 1, 1)), axis=0)
    ref = np.zeros_like(lab)
    ref[inside] = labels[tuple(c[inside] for c in coords)]
    assert (lab == ref).mean() > 0.99  # only exact .5 ties may round differently
    # the image is the linear interpolation: within the range of its neighbours
    assert img.min() >= -1e-4 and img.max() <= 7 + 1e-4


def test_flips():
    vol = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    params = SpatialParams(flips=(2,))
    img, (lab,) = apply_spatial(params, (0.5, 1, 1.5), (2, 3, 4), vol, [vol[0].astype(int)], [0])
    assert np.array_equal(img[0], vol[0, :, :, ::-1]) and np.array_equal(lab, vol[0, :, :, ::-1])


def test_intensity_formulas():
    x = np.linspace(0, 2, 24, dtype=np.float32).reshape(1, 2, 3, 4)
    out = apply_intensity(IntensityParams(gamma=2.0), x)
    assert np.allclose(out, ((x - 0) / 2) ** 2 * 2, atol=1e-6)
    out = apply_intensity(IntensityParams(contrast=0.5, brightness=1.0), x)
    assert np.allclose(out, (x - x.mean()) * 0.5 + x.mean() + 1.0, atol=1e-6)
    blurred = apply_intensity(IntensityParams(blur_sigma=1.0), np.ones((1, 5, 5, 5), np.float32) * 3)
    assert np.allclose(blurred, 3.0, atol=1e-5)
    noisy = apply_intensity(IntensityParams(noise_std=0.1, noise_seed=5), np.zeros((1, 20, 20, 20), np.float32))
    assert noisy.std() == pytest.approx(0.1, rel=0.05)


def test_class_shift_raises_only_its_classes_up_to_the_cap():
    image = np.array([[[[0.2, 0.5, 0.9, 1.2]]], [[[0.0, 0.0, 0.0, 0.0]]]], np.float32)  # (2, 1, 1, 4)
    label = np.array([[[0, 2, 2, 2]]])
    out = apply_class_shift({2: 0.3, 1: 5.0}, image, label, cap=1.0)
    # class 2 raised by 0.3 but not above 1.0 (1.2 was already above: kept); background and
    # the absent class 1 untouched; every channel shifted alike
    assert np.allclose(out[0, 0, 0], [0.2, 0.8, 1.0, 1.2])
    assert np.allclose(out[1, 0, 0], [0.0, 0.3, 0.3, 0.3])
    assert np.allclose(apply_class_shift({2: 0.3}, image, label)[0, 0, 0], [0.2, 0.8, 1.2, 1.5])
    assert apply_class_shift({}, image, label) is image


def test_class_shift_draw_scales_all_classes_together():
    s = AugmentSettings(class_shift={1: 0.4, 3: 0.2}, class_shift_probability=1.0)
    shifts = sample_class_shift(np.random.default_rng(5), s)
    assert set(shifts) == {1, 3} and 0 <= shifts[1] <= 0.4
    assert np.isclose(shifts[1], 2 * shifts[3])  # one common level
    rng = np.random.default_rng(5)
    assert sample_class_shift(rng, AugmentSettings(class_shift={1: 0.4})) == {}  # probability 0
    assert rng.random() == np.random.default_rng(5).random()  # and no random number consumed
