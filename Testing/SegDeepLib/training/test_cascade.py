"""Cascade stage-2 regions (C2) from a stage-1 model, and the fallback when stage 1 finds nothing."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SegDeepLib.data.datasets import Case
from SegDeepLib.errors import SegDeepError
from SegDeepLib.training.cascade import StageRegions


def _regions(prediction: np.ndarray, dilation_mm: float = 0.0) -> StageRegions:
    regions = StageRegions.__new__(StageRegions)
    regions.dilation_mm = dilation_mm

    def predict(image: sitk.Image) -> sitk.Image:
        out = sitk.GetImageFromArray(prediction.astype(np.uint8))
        out.CopyInformation(image)
        return out

    regions.predict = predict
    return regions


@pytest.fixture
def case(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((6, 8, 10), np.int16))
    image.SetSpacing((2.0, 3.0, 4.0))
    image.SetOrigin((1.0, -2.0, 5.0))
    label = np.zeros((6, 8, 10), np.uint8)
    label[2:4, 3:5, 4:7] = 3
    label_image = sitk.GetImageFromArray(label)
    label_image.CopyInformation(image)
    sitk.WriteImage(label_image, str(tmp_path / "label.nii.gz"))
    return Case("c0", [tmp_path / "image.nii.gz"], tmp_path / "label.nii.gz"), image, label


def test_region_is_the_stage1_prediction_when_it_finds_something(case):
    c, image, label = case
    prediction = np.zeros(label.shape, bool)
    prediction[0, 0, 0] = True
    region = _regions(prediction)(c, image)
    assert np.array_equal(sitk.GetArrayFromImage(region) > 0, prediction)
    assert region.GetOrigin() == image.GetOrigin() and region.GetSpacing() == image.GetSpacing()


def test_empty_stage1_prediction_falls_back_to_the_reference_foreground(case):
    c, image, label = case
    with pytest.warns(UserWarning, match="falls back to the reference"):
        region = _regions(np.zeros(label.shape, bool))(c, image)
    assert np.array_equal(sitk.GetArrayFromImage(region) > 0, label > 0)
    assert region.GetOrigin() == image.GetOrigin() and region.GetSpacing() == image.GetSpacing()


def test_empty_stage1_prediction_without_a_label_is_a_clear_error(case):
    c, image, label = case
    c.label = None
    with pytest.raises(SegDeepError, match="train stage 1 longer"):
        _regions(np.zeros(label.shape, bool))(c, image)


class _Same(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv = torch.nn.Conv3d(1, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class _Valid(_Same):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 5)

    def output_size(self, size):
        return tuple(s - 4 for s in size)


@pytest.mark.parametrize(
    "net,shape,tile,overlap",
    [(_Same, (11, 13, 9), (8, 8, 8), 0.0), (_Valid, (11, 13, 9), (10, 8, 9), 0.0),
     (_Valid, (5, 13, 9), (12, 12, 12), 0.5), (_Same, (20, 7, 9), (8, 8, 8), 0.25)],
)
def test_stage1_tiling_is_the_former_training_tiling(net, shape, tile, overlap):
    """Stage-1 regions now run the inference sliding window (constant weights, zero padding):
    the same probabilities as the tiling training had of its own (kept under Testing/)."""
    from SegDeepLib.inference.sliding_window import TileSettings, sliding_window
    from Testing.SegDeepLib.training.reference_tiling import predict_probabilities_3d

    model = net().eval()
    image = np.random.default_rng(1).normal(size=(1, *shape)).astype(np.float32)
    expected = predict_probabilities_3d(model, image, tile, overlap, 3)
    got = sliding_window(image, model, TileSettings(tile, overlap=overlap, weighting="constant"))
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
