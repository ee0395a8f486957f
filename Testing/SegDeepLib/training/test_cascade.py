"""Cascade stage-2 regions (C2) from a stage-1 model, and the fallback when stage 1 finds nothing."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

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
