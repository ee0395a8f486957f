"""SegDeep.py itself (four classes, short, Slicer self-test) and the --python-script batch example."""

from __future__ import annotations

import ast
import importlib.util
import py_compile

import numpy as np
import pytest
import SimpleITK as sitk

from Testing.SegDeep.helpers import fake_python, oblique_ijk_to_ras, phantom_array, write_catalogue


def test_module_file_is_short_with_the_four_classes(helpers_path):
    source = helpers_path / "SegDeep.py"
    py_compile.compile(str(source), doraise=True)
    tree = ast.parse(source.read_text())
    classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    assert {"SegDeep", "SegDeepWidget", "SegDeepLogic", "SegDeepTest"} <= set(classes)
    assert len(source.read_text().splitlines()) < 200
    assert "import torch" not in source.read_text()  # never at import time
    for helper in (helpers_path / "SegDeepHelpers").glob("*.py"):
        py_compile.compile(str(helper), doraise=True)
        assert len(helper.read_text().splitlines()) < 400, helper.name


def test_module_metadata_and_parameter_node(standin):
    import SegDeep

    parent = standin._ModuleParent()
    SegDeep.SegDeep(parent)
    assert parent.title == "SegDeep" and parent.categories == ["Segmentation"]
    assert "Segment" in parent.helpText and parent.dependencies == []
    node = SegDeep.SegDeepLogic().getParameterNode()
    assert (node.device, node.crf, node.fast, node.show3D) == ("auto", True, False, True)
    with pytest.raises(ValueError, match="not one of"):
        node.device = "gpu"


def test_slicer_self_test_runs(standin, tmp_path, monkeypatch):
    """The real SegDeepTest (what ctest runs inside Slicer), on the stand-in with the fake CLI."""
    from SegDeepHelpers import catalogue, logic

    import SegDeep

    monkeypatch.setenv("SEGDEEP_MODELS_DIR", str(tmp_path / "no-user-models"))
    path = write_catalogue(tmp_path / "catalogue.json")
    real = catalogue.loadCatalogue
    monkeypatch.setattr(catalogue, "loadCatalogue", lambda p=None: real(path))
    monkeypatch.setattr(logic, "findPythonSlicer", lambda: fake_python(tmp_path))
    test = SegDeep.SegDeepTest()
    test.runTest()
    nodes = [n for n in standin.slicer.mrmlScene._nodes if n.className == "vtkMRMLSegmentationNode"]
    assert len(nodes) == 1 and nodes[0].GetSegmentation().GetNumberOfSegments() >= 1


def test_slicer_self_test_skips_with_a_message_without_pytorch(standin, tmp_path, monkeypatch):
    """Without PyTorch (found from package metadata, never imported) the self-test does not fail."""
    from SegDeepHelpers import catalogue, environment, logic

    import SegDeep

    monkeypatch.setenv("SEGDEEP_MODELS_DIR", str(tmp_path / "no-user-models"))
    path = write_catalogue(tmp_path / "catalogue.json")
    real = catalogue.loadCatalogue
    monkeypatch.setattr(catalogue, "loadCatalogue", lambda p=None: real(path))
    monkeypatch.setenv("FAKE_FAIL", "No module named 'torch'")  # what a run would hit
    monkeypatch.setattr(logic, "findPythonSlicer", lambda: fake_python(tmp_path))
    version = environment.installedVersion
    monkeypatch.setattr(environment, "installedVersion", lambda n: None if n == "torch" else version(n))
    SegDeep.SegDeepTest().runTest()
    assert standin.ModuleState.displayed == [
        "SegDeep self-test skipped: PyTorch is not installed (install it from SegDeep's Environment "
        "section or the PyTorch extension)"]


def _load_batch_script(helpers_path):
    spec = importlib.util.spec_from_file_location("segdeep_batch", helpers_path / "Scripts" / "segdeep_batch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_volume(path, array, ijkToRAS):
    image = sitk.GetImageFromArray(array)
    ijkToLPS = np.diag([-1, -1, 1, 1]) @ ijkToRAS
    spacing = np.linalg.norm(ijkToLPS[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((ijkToLPS[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(ijkToLPS[:3, 3].tolist())
    sitk.WriteImage(image, str(path))


def test_batch_script_segments_a_folder(standin, tmp_path, monkeypatch, helpers_path):
    from SegDeepHelpers import logic

    from SegDeepLib.io import read_segmentation

    monkeypatch.setattr(logic, "findPythonSlicer", lambda: fake_python(tmp_path))
    inputs = tmp_path / "in"
    inputs.mkdir()
    arrays = {"case1": phantom_array(seed=1), "case2": phantom_array(shape=(6, 11, 13), seed=2)}
    for name, array in arrays.items():
        _write_volume(inputs / f"{name}.nii.gz", array, oblique_ijk_to_ras())
    (inputs / "notes.txt").write_text("not a volume")
    batch = _load_batch_script(helpers_path)
    with pytest.raises(SystemExit) as stop:
        batch.slicer.util.exit(batch.main(["--model", "fake-abdomen", "--input-folder", str(inputs),
                                           "--output-folder", str(tmp_path / "out"), "--device", "cpu"]))
    assert stop.value.code == 0
    for name, array in arrays.items():
        labelmap, table = read_segmentation(tmp_path / "out" / f"{name}.seg.nrrd")
        labels = sitk.GetArrayFromImage(labelmap)
        assert table.names == ["liver", "spleen"]
        np.testing.assert_array_equal(labels == 1, array == 150)
        np.testing.assert_array_equal(labels == 2, array >= 200)


def test_batch_script_reports_failures(standin, tmp_path, monkeypatch, helpers_path):
    from SegDeepHelpers import logic

    monkeypatch.setattr(logic, "findPythonSlicer", lambda: fake_python(tmp_path))
    monkeypatch.setenv("FAKE_FAIL", "model fake-abdomen: not installed")
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write_volume(inputs / "a.nrrd", phantom_array(), oblique_ijk_to_ras())
    batch = _load_batch_script(helpers_path)
    report = batch.segmentFolder(inputs, tmp_path / "out", "fake-abdomen")
    assert report[0][1] is None and "not installed" in report[0][2]
    assert batch.main(["--model", "x", "--input-folder", str(inputs), "--output-folder",
                       str(tmp_path / "out")]) == 1
