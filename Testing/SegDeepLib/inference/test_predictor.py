"""Predictor: model folders in, label maps on the exact input grid out, against numpy references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from SegDeepLib.errors import CancelledError, SegDeepError
from SegDeepLib.inference import Predictor
from SegDeepLib.io.layout import same_grid
from SegDeepLib.progress import CancelToken
from Testing.SegDeepLib.inference.tiny_nets import make_model_folder, nearest_centre

CENTRES = (0.0, 100.0, 200.0)
ORGANS = ("liver", "spleen")


def _image(shape=(14, 17, 12), oblique=True, seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    array = rng.uniform(-50, 250, size=shape).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 1.1, 2.5))
    image.SetOrigin((-12.0, 30.5, 7.25))
    if oblique:
        c, s = np.cos(0.3), np.sin(0.3)
        image.SetDirection((c, 0.0, s, 0.0, -1.0, 0.0, -s, 0.0, c))  # rotated and flipped
    return image


def _net(**kwargs):
    return {"name": "test_centres", "centres": list(CENTRES), "scale": 0.01, **kwargs}


@pytest.fixture
def folder(tmp_path):
    return make_model_folder(
        tmp_path / "tiny",
        {"main": _net()},
        ORGANS,
        inference={"mode": "3d", "tile_size": [8, 8, 8], "overlap": 0.5},
    )


def _expected(image, centres=CENTRES):
    return nearest_centre(sitk.GetArrayFromImage(image), centres)


def test_label_map_on_the_input_grid_equals_reference(folder):
    image = _image()
    result = Predictor.from_folder(folder).predict(image, device="cpu")
    assert same_grid(result.labelmap, image) and result.labelmap.GetSize() == image.GetSize()
    assert result.labelmap.GetDirection() == image.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.labelmap), _expected(image))
    assert result.table.names == list(ORGANS)
    assert set(result.timings) >= {"preprocess", "tiles", "postprocess"}


def test_organ_subset_keeps_other_organs_out(folder):
    image = _image()
    result = Predictor.from_folder(folder).predict(image, organs=["spleen"], device="cpu")
    expected = _expected(image)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(result.labelmap), np.where(expected == 2, 2, 0)
    )
    assert result.table.names == ["spleen"] and result.table.values == [2]
    with pytest.raises(SegDeepError, match="kidney"):
        Predictor.from_folder(folder).predict(image, organs=["kidney"], device="cpu")


def test_probabilities_on_input_grid(folder):
    image = _image(oblique=False)
    result = Predictor.from_folder(folder).predict(image, device="cpu", probabilities=True)
    values = sitk.GetArrayFromImage(image).astype(np.float64)
    logits = np.stack([-0.01 * (values - c) ** 2 for c in CENTRES])
    ref = np.exp(logits - logits.max(0))
    ref /= ref.sum(0)
    assert result.probabilities.shape == (3, *values.shape)
    np.testing.assert_allclose(result.probabilities, ref, atol=1e-4)


def test_resampling_model_maps_back_to_the_input_grid(tmp_path):
    folder = make_model_folder(
        tmp_path / "resampled",
        {"main": _net()},
        ORGANS,
        preprocessing={"spacing": [2.0, 2.0, 2.0], "intensity": {"kind": "none"}},
        inference={"tile_size": [8, 8, 8]},
    )
    image = sitk.GetImageFromArray(np.zeros((20, 20, 20), np.float32))
    image.SetSpacing((1.0, 1.0, 1.0))
    image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))  # permuted and flipped axes
    array = np.zeros((20, 20, 20), np.float32)
    array[4:14, 6:16, 2:12] = 200.0  # a box of 10 mm: aligned with the 2 mm grid
    image = sitk.GetImageFromArray(array)
    image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    result = Predictor.from_folder(folder).predict(image, device="cpu")
    assert same_grid(result.labelmap, image)
    labels = sitk.GetArrayFromImage(result.labelmap)
    np.testing.assert_array_equal(labels, np.where(array > 0, 2, 0))


def test_ensemble_averages_fold_probabilities(tmp_path):
    folds = {
        "fold0": _net(centres=[0.0, 100.0], scale=5e-4),
        "fold1": _net(centres=[0.0, 160.0], scale=5e-4),
    }
    folder = make_model_folder(
        tmp_path / "ens",
        folds,
        ["liver"],
        inference={"tile_size": [8, 8, 8], "ensemble": ["fold0", "fold1"]},
    )
    image = _image(oblique=False)
    result = Predictor.from_folder(folder).predict(image, device="cpu", probabilities=True)
    x = sitk.GetArrayFromImage(image).astype(np.float64)

    def p1(c):
        logits = np.stack([-5e-4 * x**2, -5e-4 * (x - c) ** 2])
        e = np.exp(logits - logits.max(0))
        return e[1] / e.sum(0)

    ref = (p1(100.0) + p1(160.0)) / 2
    np.testing.assert_allclose(result.probabilities[1], ref, atol=1e-4)
    clear = np.abs(ref - 0.5) > 1e-3
    assert clear.mean() > 0.9
    labels = sitk.GetArrayFromImage(result.labelmap)
    np.testing.assert_array_equal(labels[clear], (ref[clear] > 0.5).astype(np.uint8))


def test_flip_tta_runs_every_flip_and_keeps_the_result(folder):
    predictor = Predictor.from_folder(folder)
    image = _image()
    plain = predictor.predict(image, device="cpu", probabilities=True)
    calls_before = len(predictor.networks["main"].calls)
    flipped = predictor.predict(image, device="cpu", tta=True, probabilities=True)
    calls_tta = len(predictor.networks["main"].calls) - calls_before
    assert calls_tta == 4 * calls_before  # identity + 3 flips, same tiles each
    np.testing.assert_allclose(flipped.probabilities, plain.probabilities, atol=1e-5)


def test_postprocessing_largest_component_and_holes(tmp_path):
    folder = make_model_folder(
        tmp_path / "post",
        {"main": _net(centres=[0.0, 100.0])},
        ["liver"],
        inference={
            "tile_size": [8, 8, 8],
            "postprocess": {"largest_component": True, "fill_holes": True},
        },
    )
    array = np.zeros((12, 12, 12), np.float32)
    array[2:9, 2:9, 2:9] = 100
    array[5, 5, 5] = 0  # a hole
    array[11, 11, 11] = 100  # an island
    image = sitk.GetImageFromArray(array)
    labels = sitk.GetArrayFromImage(
        Predictor.from_folder(folder).predict(image, device="cpu").labelmap
    )
    expected = np.zeros_like(labels)
    expected[2:9, 2:9, 2:9] = 1
    np.testing.assert_array_equal(labels, expected)


def test_two_d_model_slice_by_slice(tmp_path):
    folder = make_model_folder(
        tmp_path / "two_d",
        {"main": _net(spatial_dims=2, multiple=8)},
        ORGANS,
        inference={"mode": "2d", "batch_size": 4, "slices": {"context": 1}},
    )
    image = _image(shape=(9, 13, 11))
    result = Predictor.from_folder(folder).predict(image, device="cpu")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.labelmap), _expected(image))
    assert "slices" in result.timings


def test_cascade_restricts_stage_two_to_c2(tmp_path):
    stage1 = _net(centres=[0.0, 100.0, 200.0])
    stage2 = _net(centres=[0.0, 100.0, 200.0])
    pre = {"spacing": None, "intensity": {"kind": "none"}}
    cascade = {
        "stage1": {
            "network": "stage1",
            "preprocessing": {**pre, "spacing": [2.0, 2.0, 2.0]},
            "tile_size": [8, 8, 8],
        },
        "stage2": {"network": "stage2", "tile_size": [8, 8, 8], "overlap": 0.5},
        "dilation": 2,
    }
    folder = make_model_folder(
        tmp_path / "cascade",
        {"stage1": stage1, "stage2": stage2},
        ORGANS,
        preprocessing=pre,
        inference={"mode": "cascade", "cascade": cascade},
    )
    array = np.zeros((24, 24, 24), np.float32)
    array[6:12, 6:12, 6:12] = 100  # organ 1, found by stage 1 at 2 mm
    array[14:20, 14:18, 8:14] = 200  # organ 2
    array[0, 0, 23] = 100  # one voxel lost by the coarse stage: outside C2, so background
    image = sitk.GetImageFromArray(array)
    predictor = Predictor.from_folder(folder)
    result = predictor.predict(image, device="cpu")
    labels = sitk.GetArrayFromImage(result.labelmap)
    expected = nearest_centre(array, CENTRES)
    expected[0, 0, 23] = 0
    np.testing.assert_array_equal(labels, expected)
    # stage 2 only ran on tiles touching C2 (fewer than a full overlapping pass of the crop)
    assert len(predictor.networks["stage2"].calls) > 0


def test_model_folder_problems_are_clear(folder, tmp_path):
    image = _image()
    spec = json.loads((folder / "model.json").read_text())
    spec["weights"]["sha256"] = "0" * 64
    (folder / "model.json").write_text(json.dumps(spec))
    with pytest.raises(SegDeepError, match="sha256"):
        Predictor.from_folder(folder)
    bad = make_model_folder(tmp_path / "bad", {"main": _net()}, ["liver"])  # 3 classes, 1 organ
    with pytest.raises(SegDeepError, match="classes"):
        Predictor.from_folder(bad).predict(image, device="cpu")
    with pytest.raises(SegDeepError, match="not a SegDeep model folder"):
        Predictor.from_folder(tmp_path)
    nan = sitk.GetImageFromArray(np.full((5, 5, 5), np.nan, np.float32))
    with pytest.raises(SegDeepError, match="NaN"):
        Predictor.from_folder(bad).predict(nan, device="cpu")
    flat = sitk.GetImageFromArray(np.zeros((5, 5), np.float32))
    with pytest.raises(SegDeepError, match="3D"):
        Predictor.from_folder(bad).predict(flat, device="cpu")


def test_progress_stages_and_cancel(folder):
    events = []
    Predictor.from_folder(folder).predict(_image(), device="cpu", progress=events.append)
    stages = [e.stage for e in events if e.event == "progress"]
    assert stages[0] == "preprocess" and "tiles" in stages and stages[-1] == "postprocess"
    assert any(e.event == "log" and "device: cpu" in e.message for e in events)
    tile_events = [e for e in events if e.stage == "tiles" and e.eta_s is not None]
    assert tile_events and tile_events[-1].fraction == 1.0
    token = CancelToken()

    def cancel_on_tiles(event):
        if event.stage == "tiles":
            token.cancel()

    with pytest.raises(CancelledError):
        Predictor.from_folder(folder).predict(
            _image(), device="cpu", progress=cancel_on_tiles, cancel=token
        )


def test_fast_mode_uses_the_fast_overrides(tmp_path):
    folder = make_model_folder(
        tmp_path / "fast",
        {"main": _net()},
        ORGANS,
        inference={
            "tile_size": [8, 8, 8],
            "overlap": 0.5,
            "fast": {"overlap": 0.0, "preprocessing": {"spacing": [4.0, 4.0, 4.0]}},
        },
    )
    predictor = Predictor.from_folder(folder)
    image = sitk.GetImageFromArray(np.zeros((16, 16, 16), np.float32))
    predictor.predict(image, device="cpu", fast=True)
    assert len(predictor.networks["main"].calls) == 1  # 4 mm grid: 4^3 voxels, one tile, no overlap
    result = predictor.predict(image, device="cpu")
    assert same_grid(result.labelmap, image)


def test_intensities_on_network_grid_match_the_preprocessing_pipeline():
    from SegDeepLib.inference.run import intensities_on_network_grid
    from SegDeepLib.preprocessing import preprocess

    image = _image(shape=(20, 18, 16))
    spec = {
        "spacing": [3.0, 1.5, 1.0],
        "intensity": {"kind": "window", "window": [0.0, 100.0]},
        "crop": "body",
        "body_threshold": 0.0,
        "margin_mm": 2.0,
    }
    pre = preprocess(image, spec)
    raw = preprocess(image, {**spec, "intensity": {"kind": "none"}})
    np.testing.assert_allclose(intensities_on_network_grid(image, pre), raw.array[0], atol=1e-4)


def test_crf_post_processing_equals_crf_refine_on_the_plain_probabilities(tmp_path):
    from SegDeepLib.crf import crf_refine

    params = {
        "theta_alpha": 3.0,
        "theta_beta": 40.0,
        "theta_gamma": 1.5,
        "num_iterations": 3,
        "backend": "exact",
    }
    folder = make_model_folder(
        tmp_path / "crf",
        {"main": _net(scale=5e-4)},
        ORGANS,
        inference={"tile_size": [8, 8, 8], "crf": {"default": True, "params": params}},
    )
    image = _image(shape=(6, 7, 8), oblique=False)
    image.SetSpacing((1.0, 1.0, 1.0))
    predictor = Predictor.from_folder(folder)
    plain = predictor.predict(image, device="cpu", crf=False, probabilities=True)
    refined = predictor.predict(
        image, device="cpu", probabilities=True
    )  # the model's default: CRF on
    assert "crf" in refined.timings and "crf" not in plain.timings
    features = sitk.GetArrayFromImage(image)[None].astype(np.float32)
    expected = crf_refine(plain.probabilities, features, (1.0, 1.0, 1.0), **params).numpy()
    np.testing.assert_allclose(refined.probabilities, expected, atol=1e-4)
    assert np.abs(expected - plain.probabilities).max() > 1e-3  # the CRF changed something


def test_crf_params_replace_single_model_parameters_without_touching_the_spec(tmp_path):
    import SegDeepLib.crf

    params = {"theta_alpha": 3.0, "theta_beta": 40.0, "num_iterations": 3, "backend": "exact"}
    folder = make_model_folder(
        tmp_path / "crf",
        {"main": _net(scale=5e-4)},
        ORGANS,
        inference={"tile_size": [8, 8, 8], "crf": {"default": False, "params": params}},
    )
    image = _image(shape=(6, 7, 8), oblique=False)
    predictor = Predictor.from_folder(folder)
    spec = json.dumps(predictor.spec, sort_keys=True)
    calls = []
    real = SegDeepLib.crf.crf_refine

    def spy(probs, features, spacing, **kwargs):
        calls.append(kwargs)
        return real(probs, features, spacing, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SegDeepLib.crf, "crf_refine", spy)
        predictor.predict(image, device="cpu", crf_params={"num_iterations": 1})  # CRF stays off
        assert calls == []
        predictor.predict(image, device="cpu", crf=True, crf_params={"num_iterations": "1", "w1": 2})
    assert calls == [{**params, "num_iterations": 1, "w1": 2.0}]
    assert isinstance(calls[0]["num_iterations"], int)
    assert json.dumps(predictor.spec, sort_keys=True) == spec  # nothing written into the spec
    with pytest.raises(SegDeepError, match="unknown CRF parameter 'alpha'"):
        predictor.predict(image, device="cpu", crf=True, crf_params={"alpha": 1.0})
    with pytest.raises(SegDeepError, match="crf_params: theta_gamma must be a number > 0"):
        predictor.predict(image, device="cpu", crf=True, crf_params={"theta_gamma": 0})


def test_in_memory_networks_for_training_validation():
    from SegDeepLib.io.labels import LabelTable
    from Testing.SegDeepLib.inference.tiny_nets import CentreNet

    spec = {
        "networks": {"main": _net()},
        "labels": LabelTable.from_names(ORGANS).to_dict(),
        "inference": {"tile_size": [8, 8, 8]},
    }
    predictor = Predictor(spec, {"main": CentreNet(CENTRES, scale=0.01)})
    image = _image()
    result = predictor.predict(image, device="cpu")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.labelmap), _expected(image))
    with pytest.raises(SegDeepError, match="not segmented by model"):
        predictor.predict(image, organs=["brain"], device="cpu")
