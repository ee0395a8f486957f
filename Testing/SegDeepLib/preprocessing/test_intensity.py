"""Intensity functions against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.preprocessing import (
    apply_intensity,
    ct_fingerprint,
    ct_nnunet_normalize,
    density_map,
    dual_channel,
    validate_spec,
    window_rescale,
    zscore,
)


def test_window_rescale_hand_values() -> None:
    hu = np.array([-1000.0, -200.0, 50.0, 300.0, 2000.0])
    np.testing.assert_allclose(window_rescale(hu, -200, 300), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)
    assert window_rescale(hu, -200, 300).dtype == np.float32
    with pytest.raises(SegDeepError, match=r"window \[300, -200\]"):
        window_rescale(hu, 300, -200)


def test_ct_nnunet_normalize_hand_values() -> None:
    hu = np.array([-500.0, 0.0, 40.0, 1000.0])
    # clip to [-100, 200], then (x - 50) / 25
    np.testing.assert_allclose(
        ct_nnunet_normalize(hu, (-100, 200), 50.0, 25.0), [-6.0, -2.0, -0.4, 6.0], atol=1e-6
    )


def test_ct_fingerprint_pools_foreground_voxels_of_all_cases() -> None:
    # case 1 holds foreground values 0..199, case 2 holds 200..399; background is a decoy (10000)
    cases = []
    for start in (0, 200):
        image = np.full((4, 10, 10), 10000.0)
        label = np.zeros((4, 10, 10), np.uint8)
        image[:2] = np.arange(start, start + 200).reshape(2, 10, 10)
        label[:2] = 1 + start // 200
        cases.append((image, label))
    stats = ct_fingerprint(cases)
    # 400 values 0..399: linear-interpolated percentiles at 0.005*399 and 0.995*399
    assert stats["kind"] == "ct_nnunet"
    assert stats["clip"] == pytest.approx([1.995, 397.005])
    assert stats["mean"] == pytest.approx(199.5)
    assert stats["std"] == pytest.approx(math.sqrt((400**2 - 1) / 12))
    assert validate_spec({"intensity": stats})["intensity"] == stats  # usable as a spec as is


def test_ct_fingerprint_subsamples_and_checks_inputs() -> None:
    image = np.arange(1000.0).reshape(10, 10, 10)
    label = np.ones((10, 10, 10), np.uint8)
    a = ct_fingerprint([(image, label)], max_voxels_per_case=100, seed=1)
    b = ct_fingerprint([(image, label)], max_voxels_per_case=100, seed=1)
    assert a == b
    assert a != ct_fingerprint([(image, label)])
    with pytest.raises(SegDeepError, match="no foreground"):
        ct_fingerprint([(image, np.zeros_like(label))])
    with pytest.raises(SegDeepError, match="case 0: image shape"):
        ct_fingerprint([(image, label[:5])])
    img = sitk.GetImageFromArray(image)
    lab = sitk.GetImageFromArray(label)
    lab.SetOrigin((5.0, 0.0, 0.0))
    with pytest.raises(SegDeepError, match="not on the image's grid"):
        ct_fingerprint([(img, lab)])


def test_zscore_hand_values_and_mask() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0])
    sd = math.sqrt(1.25)
    np.testing.assert_allclose(zscore(values), (values - 2.5) / sd, rtol=1e-6)
    mask = np.array([False, True, True, False])  # mean 2.5, std 0.5 inside
    np.testing.assert_allclose(zscore(values, mask), [-3.0, -1.0, 1.0, 3.0], rtol=1e-6)
    with pytest.raises(SegDeepError, match="mask is empty"):
        zscore(values, np.zeros(4, bool))
    assert np.all(np.isfinite(zscore(np.ones(5))))  # constant image: no division by zero


def test_density_map_formula() -> None:
    level, width = 6.0, 20.0
    hu = np.array([6.0, 26.0, -14.0, 46.0, -1000.0])
    np.testing.assert_allclose(
        density_map(hu), [1.0, math.exp(-1), math.exp(-1), math.exp(-4), 0.0], atol=1e-7
    )
    # the paper's 1030 / 20 in stored units (stored = HU + 1024) is the same map as 6 / 20 in HU
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1000, 1500, size=1000)
    np.testing.assert_allclose(
        density_map(hu + 1024, 1030, 20), density_map(hu, level, width), atol=1e-6
    )
    with pytest.raises(SegDeepError, match="width"):
        density_map(hu, 6.0, 0.0)


def test_dual_channel_channels_in_unit_range() -> None:
    rng = np.random.default_rng(1)
    hu = rng.uniform(-1200, 2000, size=(3, 4, 5))
    out = dual_channel(hu, level=40, width=30, window=(-100, 300))
    assert out.shape == (2, 3, 4, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], np.clip((hu + 100) / 400, 0, 1), atol=1e-6)
    np.testing.assert_allclose(out[1], np.exp(-(((hu - 40) / 30) ** 2)), atol=1e-6)
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize(
    "intensity, channels",
    [
        ({"kind": "window", "window": [-200, 300]}, 1),
        ({"kind": "ct_nnunet", "clip": [-100, 200], "mean": 50, "std": 25}, 1),
        ({"kind": "zscore"}, 1),
        ({"kind": "dual_channel"}, 2),
        ({"kind": "none"}, 1),
    ],
)
def test_apply_intensity_kinds(intensity, channels) -> None:
    hu = np.linspace(-300, 400, 60).reshape(3, 4, 5)
    spec = validate_spec({"intensity": intensity})["intensity"]
    out = apply_intensity(hu, spec)
    assert out.shape == (channels, 3, 4, 5) and out.dtype == np.float32
    if intensity["kind"] == "none":
        np.testing.assert_array_equal(out[0], hu.astype(np.float32))
    if intensity["kind"] == "zscore":
        assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-5
