"""The real `python -m SegDeepLib segment` on the real TotalSegmentator CT, through the module's
subprocess runner: JSON-lines progress, result on the input grid, named segments, cancel.

The model is a tiny untrained 3D U-Net written as a real model folder (weights + sha256), so the
whole CLI pipeline runs (preprocessing, sliding window, resampling back, .seg.nrrd writing) in
seconds; its labels are arbitrary but their geometry and names are checked exactly.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from Testing.conftest import shared_file
from Testing.SegDeep.helpers import segdeep_temp_dirs

CT = "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_ct.nii.gz"


def _tiny_model(folder, tile, crf=None):
    import torch

    from SegDeepLib.io.labels import LabelTable
    from SegDeepLib.io.model_folder import save_model_folder
    from SegDeepLib.models import build_model

    torch.manual_seed(0)
    network = {"name": "unet3d", "in_channels": 1, "num_classes": 3, "width": 2, "depth": 1}
    spec = {"id": "slicer-test-tiny", "version": "0.1", "title": "tiny untrained U-Net", "method": "test",
            "modality": "CT", "networks": {"main": network},
            "preprocessing": {"spacing": [6.0, 6.0, 6.0], "intensity": {"kind": "window", "window": [-200, 300]}},
            "labels": LabelTable.from_names(["liver", "spleen"], name="tiny").to_dict(),
            "inference": {"mode": "3d", "tile_size": [tile] * 3, "overlap": 0.0, "crf": crf},
            "training": {"data": "none", "cases": 0, "licence": "CC0"}, "licence": "CC0"}
    return save_model_folder(folder, spec, {"main": build_model(network).state_dict()})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """One 64^3 tile at 6 mm: the whole CT in a single forward pass."""
    return _tiny_model(tmp_path_factory.mktemp("models") / "slicer-test-tiny", 64)


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    """64 tiles of 16^3: a run long enough to be cancelled in the middle."""
    return _tiny_model(tmp_path_factory.mktemp("models") / "slicer-test-slow", 16)


@pytest.fixture(scope="module")
def real_ct():
    image = sitk.ReadImage(str(shared_file(CT)))
    # IJK-to-RAS computed here independently of the module (LPS -> RAS: negate x and y rows)
    ijkToLPS = np.eye(4)
    ijkToLPS[:3, :3] = np.reshape(image.GetDirection(), (3, 3)) * np.array(image.GetSpacing())
    ijkToLPS[:3, 3] = image.GetOrigin()
    return image, sitk.GetArrayFromImage(image), np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijkToLPS


def test_real_cli_on_real_ct_progress_and_grid(helpers_path, tiny_model, real_ct):
    from SegDeepHelpers import jobs

    from SegDeepLib.io import read_segmentation

    image, array, ijkToRAS = real_ct
    before = segdeep_temp_dirs()
    events, codes = [], []
    job = jobs.SegmentationJob(sys.executable, onEvent=events.append)
    job.start(array, ijkToRAS, str(tiny_model), jobs.SegmentOptions(device="cpu", crf=False),
              codes.append)
    assert job.wait(timeout=300) == 0, job.failureText(codes[0])
    labelmap, table = read_segmentation(job.outputPath)
    job.cleanup()
    assert segdeep_temp_dirs() == before
    assert table.names == ["liver", "spleen"]
    assert labelmap.GetSize() == image.GetSize()
    np.testing.assert_allclose(labelmap.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(labelmap.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(labelmap.GetDirection(), image.GetDirection(), atol=1e-6)
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all(0.0 <= e["fraction"] <= 1.0 for e in progress)
    stages = {e["stage"] for e in progress}
    assert len(stages) >= 2, stages
    assert events[-1]["event"] == "done"
    assert events[-1]["data"]["outputs"]["segmentation"] == str(job.outputPath)


def test_real_cli_through_the_logic_on_the_stand_in(standin, tiny_model, real_ct):
    import SegDeep

    _, array, ijkToRAS = real_ct
    volume = standin.slicer.util.addVolumeFromArray(array, ijkToRAS, "example_ct")
    logic = SegDeep.SegDeepLogic(python=sys.executable)
    progress = []
    result = logic.segment(volume, str(tiny_model), device="cpu", organs=["liver", "spleen"],
                           onProgress=progress.append)
    assert result.state == "done" and progress
    assert result.outputs["segmentation"].endswith("segmentation.seg.nrrd")
    segmentation = result.segmentationNode.GetSegmentation()
    for segmentId in result.segmentIds:
        segment = segmentation.GetSegment(segmentId)
        assert segment._name in ("liver", "spleen") and segment._mask.shape == array.shape
        np.testing.assert_allclose(segment._ijkToRAS, ijkToRAS)


def test_real_cli_cancel_leaves_nothing_behind(helpers_path, slow_model, real_ct):
    """Cancel as soon as the CLI reports progress: exit 130, process gone, temp folder removed."""
    from SegDeepHelpers import jobs

    _, array, ijkToRAS = real_ct
    before = segdeep_temp_dirs()
    events, codes = [], []
    job = jobs.SegmentationJob(sys.executable, onEvent=events.append)
    job.start(array, ijkToRAS, str(slow_model), jobs.SegmentOptions(device="cpu", tta=True),
              lambda code: (codes.append(code), job.cleanup()))
    pid = job.runner.process.pid
    deadline = time.monotonic() + 120
    while not any(e.get("stage") == "tiles" for e in events) and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.01)
    job.cancel()
    assert job.wait(timeout=60) == 130 and codes == [130]
    assert job.runner.process.poll() is not None
    with pytest.raises(ProcessLookupError):
        import os

        os.killpg(pid, 0)  # the whole process group is gone
    assert segdeep_temp_dirs() == before


def test_real_cli_takes_the_panels_crf_parameters(helpers_path, tmp_path, real_ct):
    """The module's ``--crf-param`` flags are accepted by the real CLI and replace exactly the
    given parameters of the model's ``inference.crf.params`` (as the CLI's CRF log line shows)."""
    import ast

    from SegDeepHelpers import jobs

    model = _tiny_model(tmp_path / "slicer-test-crf", 64,
                        crf={"default": False, "params": {"theta_alpha": 10.0, "w1": 2.0}})
    _, array, ijkToRAS = real_ct
    events, codes = [], []
    job = jobs.SegmentationJob(sys.executable, onEvent=events.append)
    options = jobs.SegmentOptions(device="cpu", crf=True,
                                  crfParams={"theta_alpha": 6.5, "num_iterations": 1})
    job.start(array, ijkToRAS, str(model), options, codes.append)
    assert job.wait(timeout=300) == 0, job.failureText(codes[0])
    job.cleanup()
    [line] = [e["message"] for e in events if e.get("message", "").startswith("CRF refinement (")]
    assert ast.literal_eval(line[len("CRF refinement ("):-1]) == {
        "theta_alpha": 6.5, "w1": 2.0, "num_iterations": 1}
