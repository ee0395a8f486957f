"""`segdeep segment`: files and DICOM in, .seg.nrrd / .nii.gz out on the input grid, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from SegDeepLib.cli.main import main
from SegDeepLib.inference.catalogue import CATALOGUE_FILE
from SegDeepLib.io import read_image, read_segmentation
from SegDeepLib.io.layout import same_grid
from Testing.conftest import shared_file
from Testing.SegDeepLib.inference.tiny_nets import make_model_folder, nearest_centre

CENTRES = [0.0, 100.0, 200.0]


@pytest.fixture
def model(tmp_path):
    return make_model_folder(
        tmp_path / "cli-model",
        {"main": {"name": "test_centres", "centres": CENTRES, "scale": 0.01}},
        ["liver", "spleen"],
        inference={"tile_size": [16, 16, 16], "batch_size": 2},
    )


@pytest.fixture
def volume(tmp_path):
    rng = np.random.default_rng(3)
    image = sitk.GetImageFromArray(rng.uniform(-50, 250, (10, 12, 9)).astype(np.float32))
    image.SetSpacing((0.7, 0.9, 3.0))
    image.SetOrigin((5.0, -3.0, 100.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    path = tmp_path / "input.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def test_seg_nrrd_has_names_colours_terminology_and_the_input_grid(model, volume, tmp_path):
    out = tmp_path / "out.seg.nrrd"
    assert (
        main(
            [
                "segment",
                str(volume),
                "-o",
                str(out),
                "--model",
                str(model),
                "--device",
                "cpu",
                "--progress",
                "none",
            ]
        )
        == 0
    )
    import slicerio

    seg = slicerio.read_segmentation(str(out))
    names = [s["name"] for s in seg["segments"]]
    assert names == ["liver", "spleen"]
    assert seg["segments"][0]["terminology"]["type"][1] == "10200004"
    labelmap, table = read_segmentation(out)
    image = read_image(volume)
    assert same_grid(labelmap, image, tol=1e-4)
    expected = nearest_centre(sitk.GetArrayFromImage(image), CENTRES)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labelmap), expected)
    assert table.names == ["liver", "spleen"]


def test_nifti_output_organ_subset_and_probabilities(model, volume, tmp_path):
    out, probs = tmp_path / "out.nii.gz", tmp_path / "probs.npy"
    assert (
        main(
            [
                "segment",
                str(volume),
                "-o",
                str(out),
                "--model",
                str(model),
                "--organs",
                "spleen",
                "--probabilities",
                str(probs),
                "--device",
                "cpu",
                "--progress",
                "none",
            ]
        )
        == 0
    )
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    expected = nearest_centre(sitk.GetArrayFromImage(read_image(volume)), CENTRES)
    np.testing.assert_array_equal(labels, np.where(expected == 2, 2, 0))
    p = np.load(probs)
    assert p.shape == (3, *labels.shape)
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(p.argmax(0), expected)


def test_json_progress_lines(model, volume, tmp_path, capsys):
    out = tmp_path / "out.seg.nrrd"
    assert (
        main(
            [
                "segment",
                str(volume),
                "-o",
                str(out),
                "--model",
                str(model),
                "--device",
                "cpu",
                "--progress",
                "json",
            ]
        )
        == 0
    )
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    stages = [e.get("stage") for e in events if e["event"] == "progress"]
    assert {"preprocess", "tiles", "postprocess", "write"} <= set(stages)
    assert events[-1]["event"] == "done" and events[-1]["data"]["outputs"]["segmentation"] == str(
        out
    )


def test_clear_errors(model, volume, tmp_path, capsys):
    out = tmp_path / "out.seg.nrrd"
    flat = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 5), np.float32)), str(flat))
    nan = tmp_path / "nan.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 4, 4), np.nan, np.float32)), str(nan))
    cases = [
        ([str(flat), "-o", str(out), "--model", str(model)], "3D"),
        ([str(nan), "-o", str(out), "--model", str(model)], "NaN"),
        ([str(volume), "-o", str(out), "--model", "no-such-model"], "not in the catalogue"),
        (
            [str(volume), "-o", str(tmp_path / "out.txt"), "--model", str(model)],
            "unsupported output",
        ),
        ([str(volume), "-o", str(out), "--model", str(model), "--organs", "brain"], "brain"),
        ([str(tmp_path / "missing.nii.gz"), "-o", str(out), "--model", str(model)], "no such file"),
    ]
    for args, message in cases:
        assert main(["segment", *args, "--device", "cpu", "--progress", "none"]) == 2
        assert message in capsys.readouterr().err
    out.write_text("existing")
    assert (
        main(["segment", str(volume), "-o", str(out), "--model", str(model), "--progress", "none"])
        == 2
    )
    assert "--overwrite" in capsys.readouterr().err


def test_dicom_folder_input(tmp_path):
    model = make_model_folder(
        tmp_path / "big-tiles",
        {"main": {"name": "test_centres", "centres": CENTRES}},
        ["liver", "spleen"],
        inference={"tile_size": [4, 256, 256], "overlap": 0.0},
    )
    folder = shared_file("dcmqi-ct-3slice")
    dicom = next(
        p
        for p in folder.rglob("*")
        if p.is_dir() and any(q.suffix.lower() == ".dcm" for q in p.iterdir())
    )
    out = tmp_path / "dicom.seg.nrrd"
    assert (
        main(
            [
                "segment",
                str(dicom),
                "-o",
                str(out),
                "--model",
                str(model),
                "--device",
                "cpu",
                "--progress",
                "none",
            ]
        )
        == 0
    )
    labelmap, _ = read_segmentation(out)
    assert same_grid(labelmap, read_image(dicom), tol=1e-4)


def test_default_model_on_the_real_ct_writes_a_seg_nrrd_on_its_grid(tmp_path):
    """The issue's 'done when': the real CT, the catalogue's default model, slicerio reads it back."""
    assert CATALOGUE_FILE.exists(), f"the shipped catalogue is missing: {CATALOGUE_FILE}"
    ct_path = shared_file("totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_ct.nii.gz")
    out = tmp_path / "out.seg.nrrd"
    assert (
        main(["segment", str(ct_path), "-o", str(out), "--device", "cpu", "--progress", "none"])
        == 0
    )
    import slicerio

    from SegDeepLib.inference import Predictor

    seg = slicerio.read_segmentation(str(out))
    assert [s["name"] for s in seg["segments"]] == Predictor.load().table.names
    labelmap, _ = read_segmentation(out)
    assert same_grid(labelmap, read_image(ct_path), tol=1e-4)
    assert labelmap.GetSize() == (122, 101, 112)


def test_crf_param_overrides_reach_crf_refine_and_bad_ones_are_refused(volume, tmp_path, capsys):
    """``--crf-param`` replaces single CRF parameters of the model's ``inference.crf.params``."""
    import SegDeepLib.crf

    model = make_model_folder(
        tmp_path / "crf-model",
        {"main": {"name": "test_centres", "centres": CENTRES, "scale": 0.01}},
        ["liver", "spleen"],
        inference={
            "tile_size": [16, 16, 16],
            "crf": {
                "default": False,
                "params": {"theta_alpha": 10.0, "theta_beta": 20.0, "w1": 2.0},
            },
        },
    )
    calls = []
    real = SegDeepLib.crf.crf_refine

    def spy(probs, features, spacing, **params):
        calls.append(params)
        return real(probs, features, spacing, **params)

    base = ["segment", str(volume), "--model", str(model), "--device", "cpu", "--progress", "none"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SegDeepLib.crf, "crf_refine", spy)
        out = str(tmp_path / "out.seg.nrrd")
        args = ["--crf", "--crf-param", "theta_alpha=5", "--crf-param", "num_iterations=2"]
        assert main([*base, "-o", out, *args]) == 0
        assert calls == [{"theta_alpha": 5.0, "theta_beta": 20.0, "w1": 2.0, "num_iterations": 2}]
        assert isinstance(calls[0]["num_iterations"], int)
        # the model's default is "no CRF": parameters alone do not switch it on
        assert main([*base, "-o", str(tmp_path / "b.nii.gz"), "--crf-param", "w2=0.5"]) == 0
        assert len(calls) == 1
    capsys.readouterr()
    crf = ["--crf", "--crf-param"]
    cases = [
        ([*crf, "alpha=3"], "--crf-param alpha: unknown CRF parameter; use one of theta_alpha"),
        ([*crf, "theta_alpha"], "use NAME=VALUE"),
        ([*crf, "theta_beta=abc"], "theta_beta must be a number > 0"),
        ([*crf, "theta_gamma=0"], "theta_gamma must be a number > 0"),
        ([*crf, "w1=nan"], "w1 must be a number >= 0"),
        ([*crf, "w2=-1"], "w2 must be a number >= 0"),
        ([*crf, "num_iterations=2.5"], "num_iterations must be an integer >= 0"),
        (["--no-crf", "--crf-param", "w1=1"], "no effect with --no-crf"),
    ]
    for args, message in cases:
        assert main([*base, "-o", str(tmp_path / "bad.seg.nrrd"), *args]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad.seg.nrrd").exists()


def test_dicom_folder_to_dicom_seg_matches_the_seg_nrrd(tmp_path, capsys):
    """`segdeep segment DICOM_DIR -o out.dcm`: the same masks as .seg.nrrd, read back on the grid."""
    from SegDeepLib.io.dicom_seg import read_dicom_seg

    model = make_model_folder(
        tmp_path / "big-tiles",
        {"main": {"name": "test_centres", "centres": CENTRES}},
        ["liver", "spleen"],
        inference={"tile_size": [4, 256, 256], "overlap": 0.0},
    )
    dicom = shared_file("dcmqi-ct-3slice/ct-3slice")
    common = ["--model", str(model), "--device", "cpu", "--progress", "none"]
    nrrd, dcm = tmp_path / "out.seg.nrrd", tmp_path / "out.dcm"
    assert main(["segment", str(dicom), "-o", str(nrrd), *common]) == 0
    assert main(["segment", str(dicom), "-o", str(dcm), *common]) == 0
    assert f"wrote {dcm}" in capsys.readouterr().out
    expected, table = read_segmentation(nrrd)
    labelmap, dcm_table = read_dicom_seg(dcm, reference=read_image(dicom))
    assert same_grid(labelmap, read_image(dicom), tol=1e-6)
    assert dcm_table.names == table.names == ["liver", "spleen"]
    for lab, dcm_lab in zip(table.labels, dcm_table.labels):
        mask = sitk.GetArrayViewFromImage(expected) == lab.value
        assert mask.any()
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(labelmap) == dcm_lab.value, mask)


def test_dicom_seg_output_needs_a_dicom_folder(model, volume, tmp_path, capsys):
    out = tmp_path / "out.dcm"
    args = ["segment", str(volume), "-o", str(out), "--model", str(model), "--progress", "none"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a DICOM series folder" in err and str(volume) in err
    assert not out.exists()
