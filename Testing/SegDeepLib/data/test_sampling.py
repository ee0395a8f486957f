"""Sampling: class-balanced foreground, candidate region, determinism, 2D stacks and sequences."""

from __future__ import annotations

import numpy as np

from SegDeepLib.data.augment import AugmentSettings
from SegDeepLib.data.cache import CachedCase, class_coordinates
from SegDeepLib.data.sampling import PatchDataset, SamplingSettings, choose_centre, draw_sample


def _case(region: bool = False) -> CachedCase:
    rng = np.random.default_rng(0)
    label = np.zeros((12, 16, 16), np.uint8)
    label[2:4, 2:4, 2:4] = 1  # tiny class
    label[5:12, 5:16, 5:16] = 2  # big class
    image = rng.normal(size=(1, 12, 16, 16)).astype(np.float32)
    mask = None
    if region:
        mask = np.zeros(label.shape, bool)
        mask[:, :8, :8] = True
    return CachedCase("x", image, label, mask, (1.0, 1.0, 1.0), [True, True, True],
                      class_coordinates(label, 3, rng))


def test_foreground_oversampling_is_class_balanced():
    case = _case()
    rng = np.random.default_rng(1)
    s = SamplingSettings(patch_size=(4, 4, 4), foreground_fraction=1.0)
    classes = [case.label[tuple(choose_centre(case, rng, s).astype(int))] for _ in range(600)]
    counts = np.bincount(classes, minlength=3)
    assert counts[0] == 0
    assert abs(counts[1] - counts[2]) < 100  # ~300 each although class 1 has 8 voxels vs 847


def test_background_centres_stay_in_region():
    case = _case(region=True)
    rng = np.random.default_rng(2)
    s = SamplingSettings(patch_size=(4, 4, 4), foreground_fraction=0.0)
    for _ in range(200):
        z, y, x = choose_centre(case, rng, s).astype(int)
        assert case.region[z, y, x]


def test_sample_mask_is_region_and_deterministic():
    case = _case(region=True)
    s = SamplingSettings(patch_size=(6, 8, 8), foreground_fraction=0.5)
    aug = AugmentSettings(affine_probability=1.0, rotation_deg=20, intensity_probability=1.0, noise_std=0.1)
    ds = PatchDataset(["x"], lambda _: case, s, aug, seed=7, epoch=2, length=10)
    a, b = ds[3], ds[3]
    for key in a:
        assert np.array_equal(a[key], b[key])
    assert a["image"].shape == (1, 6, 8, 8) and a["label"].shape == (6, 8, 8) and a["mask"].dtype == bool
    other = PatchDataset(["x"], lambda _: case, s, aug, seed=7, epoch=3, length=10)[3]
    assert not np.array_equal(a["image"], other["image"])
    plain = draw_sample(case, np.random.default_rng(0), SamplingSettings(patch_size=(12, 16, 16),
                        foreground_fraction=0.0, in_region=False), None)
    # whole-volume patch without augmentation: the mask is the region itself (up to the centring)
    assert plain["mask"].sum() == case.region.sum() or plain["mask"].sum() > 0


def test_slice_stack_and_sequence_layout():
    case = _case()
    # with no augmentation and foreground 0, compare with direct slicing around the chosen centre
    s = SamplingSettings(mode="slices2d", patch_size=(16, 16), foreground_fraction=0.0, in_region=False,
                         context_slices=3)
    rng = np.random.default_rng(5)
    centre = choose_centre(case, np.random.default_rng(5), s).astype(int)
    sample = draw_sample(case, rng, s, None)
    z = centre[0]
    assert sample["image"].shape == (3, 16, 16) and sample["label"].shape == (16, 16)
    if 1 <= z <= 10:
        assert np.allclose(sample["image"], case.image[0, z - 1:z + 2], atol=1e-6)
        assert np.array_equal(sample["label"], case.label[z])
    seq = SamplingSettings(mode="sequence2d", patch_size=(16, 16), sequence_length=4, context_slices=3,
                           foreground_fraction=0.0, in_region=False)
    out = draw_sample(case, np.random.default_rng(6), seq, None)
    assert out["image"].shape == (4, 3, 16, 16) and out["label"].shape == (4, 16, 16)
    # consecutive stacks overlap by two slices
    assert np.array_equal(out["image"][0, 1:], out["image"][1, :2])


def test_class_shift_changes_only_that_class_in_a_sample():
    case = _case()
    s = SamplingSettings(patch_size=(6, 8, 8), foreground_fraction=1.0)
    plain = draw_sample(case, np.random.default_rng(4), s, AugmentSettings())
    aug = AugmentSettings(class_shift={2: 0.5}, class_shift_probability=1.0)
    shifted = draw_sample(case, np.random.default_rng(4), s, aug)
    assert np.array_equal(plain["label"], shifted["label"])  # same patch (the draw comes after)
    diff = shifted["image"][0] - plain["image"][0]
    inside = plain["label"] == 2
    assert inside.any() and np.allclose(diff[~inside], 0)
    assert np.allclose(diff[inside], diff[inside].flat[0]) and 0 < diff[inside].flat[0] <= 0.5
