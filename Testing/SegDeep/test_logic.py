"""SegDeepLogic without the GUI (stand-in Slicer, fake CLI): names, colours, terminology,
reference geometry, subject hierarchy, 3D, update with undo copy, failure, cancel, training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from Testing.SegDeep.helpers import (
    fake_python,
    oblique_ijk_to_ras,
    phantom_array,
    segdeep_temp_dirs,
)


@pytest.fixture
def scene(standin, tmp_path):
    import SegDeep

    volume = standin.slicer.util.addVolumeFromArray(phantom_array(), oblique_ijk_to_ras(), "CT")
    logic = SegDeep.SegDeepLogic(python=fake_python(tmp_path))
    return standin, volume, logic


def _segment(node, name):
    segmentation = node.GetSegmentation()
    return segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(name))


def test_blocking_segment_names_colours_terminology_geometry(scene):
    standin, volume, logic = scene
    from SegDeepLib.io.labels import load_label_table

    before = segdeep_temp_dirs()
    result = logic.segment(volume, "fake-abdomen", device="cpu", show3D=True)
    node = result.segmentationNode
    organs = load_label_table("organs")
    assert result.state == "done" and len(result.segmentIds) == 2
    for name in ("liver", "spleen"):
        segment, label = _segment(node, name), organs.by_name(name)
        assert segment._name == name
        np.testing.assert_allclose(segment._color, [c / 255 for c in label.color])
        entry = segment._tags["TerminologyEntry"]
        code = label.terminology["type"]
        assert f"~{code[0]}^{code[1]}^{code[2]}~" in entry
        assert entry.startswith("Segmentation category and type - 3D Slicer General Anatomy list~")
    assert node._referenceVolume is volume
    assert node._references["referenceImageGeometryRef"] == volume.GetID()
    sh = standin.slicer.mrmlScene.GetSubjectHierarchyNode()
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == sh.GetItemParent(sh.GetItemByDataNode(volume))
    assert node._displayNodes and node._closedSurface
    assert segdeep_temp_dirs() == before


@pytest.mark.parametrize("standin", [(5, 8)], indirect=True)
def test_slicer_58_uses_the_terminology_tag_api(scene):
    standin, volume, logic = scene
    node = logic.segment(volume, "fake-abdomen").segmentationNode
    segment = _segment(node, "liver")
    assert not hasattr(segment, "SetTerminology")
    assert "SCT^10200004^Liver" in segment._tags["TerminologyEntry"]
    assert ("vtkSegment", "SetTag") in standin.RECORD


def test_organ_subset_and_options_reach_the_cli(scene, tmp_path, monkeypatch):
    _, volume, logic = scene
    monkeypatch.setenv("FAKE_ARGS_FILE", str(tmp_path / "args.json"))
    result = logic.segment(volume, "fake-abdomen", organs=["spleen"], device="cpu", crf=False, fast=True)
    argv = json.loads((tmp_path / "args.json").read_text())
    assert argv[argv.index("--model") + 1] == "fake-abdomen"
    assert argv[argv.index("--organs") + 1] == "spleen"
    assert "--no-crf" in argv and "--fast" in argv and argv[-2:] == ["--progress", "json"]
    assert argv[argv.index("--device") + 1] == "cpu"
    assert [_segment(result.segmentationNode, "spleen")._name] == ["spleen"]
    assert not result.segmentationNode.GetSegmentation().GetSegmentIdBySegmentName("liver")


def test_update_existing_segmentation_keeps_a_copy_of_replaced_segments(scene):
    _, volume, logic = scene
    first = logic.segment(volume, "fake-abdomen").segmentationNode
    liver = _segment(first, "liver")
    liver._mask = np.zeros_like(liver._mask)
    liver._mask[0, 0, :3] = 1  # "manual edit" the user might want back
    result = logic.segment(volume, "fake-abdomen", segmentationNode=first)
    assert result.segmentationNode is first
    assert first.GetSegmentation().GetNumberOfSegments() == 2  # replaced in place, not duplicated
    kept = _segment(result.backupNode, "liver")._mask
    assert kept.sum() == 3 and kept[0, 0, :3].all()
    assert _segment(first, "liver")._mask.sum() == (phantom_array() == 150).sum()


def _expected_masks() -> dict[str, np.ndarray]:
    """What the fake CLI segments, voxel by voxel, on the volume's own (local) grid."""
    array = phantom_array()
    return {"liver": (array >= 100) & (array < 200), "spleen": array >= 200}


def test_volume_under_a_transform_segmentation_follows_it_on_the_local_grid(scene):
    standin, volume, logic = scene
    plain = logic.segment(volume, "fake-abdomen").segmentationNode
    transform = standin.addTransformNode("Registration")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    result = logic.segment(volume, "fake-abdomen")
    node = result.segmentationNode
    assert node is not plain
    assert node.GetTransformNodeID() == transform.GetID()
    assert node.GetParentTransformNode() is transform
    assert plain.GetTransformNodeID() is None  # the earlier result stays where it was
    for name, expected in _expected_masks().items():
        segment = _segment(node, name)
        np.testing.assert_array_equal(segment._mask, expected)  # no resampling
        np.testing.assert_array_equal(segment._mask, _segment(plain, name)._mask)
        np.testing.assert_allclose(segment._ijkToRAS, oblique_ijk_to_ras())  # local grid
    assert any("under transform" in line for line in result.log)


def test_existing_segmentation_is_moved_to_the_volumes_transform_with_its_undo_copy(scene):
    standin, volume, logic = scene
    other, registration = standin.addTransformNode("Other"), standin.addTransformNode("Registration")
    existing = logic.segment(volume, "fake-abdomen").segmentationNode
    existing.SetAndObserveTransformNodeID(other.GetID())
    volume.SetAndObserveTransformNodeID(registration.GetID())
    result = logic.segment(volume, "fake-abdomen", segmentationNode=existing)
    assert result.segmentationNode is existing
    assert existing.GetTransformNodeID() == registration.GetID()
    assert result.backupNode.GetTransformNodeID() == registration.GetID()
    assert existing.GetSegmentation().GetNumberOfSegments() == 2
    for name, expected in _expected_masks().items():
        np.testing.assert_array_equal(_segment(existing, name)._mask, expected)
        np.testing.assert_array_equal(_segment(result.backupNode, name)._mask, expected)


@pytest.mark.parametrize("previous", [None, "Other"])
def test_volume_without_transform_gives_a_segmentation_without_transform(scene, previous):
    standin, volume, logic = scene
    existing = standin.slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    if previous:
        existing.SetAndObserveTransformNodeID(standin.addTransformNode(previous).GetID())
    new = logic.segment(volume, "fake-abdomen")
    updated = logic.segment(volume, "fake-abdomen", segmentationNode=existing)
    assert new.segmentationNode.GetTransformNodeID() is None
    assert updated.segmentationNode is existing and existing.GetTransformNodeID() is None
    assert existing.GetParentTransformNode() is None
    assert not any("under transform" in line for line in new.log + updated.log)
    for name, expected in _expected_masks().items():
        np.testing.assert_array_equal(_segment(existing, name)._mask, expected)


def test_failure_raises_with_the_cli_message_and_cleans_up(scene, monkeypatch):
    _, volume, logic = scene
    monkeypatch.setenv("FAKE_FAIL", "input.nrrd: a 3D volume is needed; select a 3D volume")
    before = segdeep_temp_dirs()
    with pytest.raises(RuntimeError, match="a 3D volume is needed"):
        logic.segment(volume, "fake-abdomen")
    assert segdeep_temp_dirs() == before
    assert not logic.isRunning


def test_non_blocking_with_callbacks_and_cancel(scene, monkeypatch):
    standin, volume, logic = scene
    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    progress, states, finished = [], [], []
    before = segdeep_temp_dirs()
    job = logic.segment(volume, "fake-abdomen", waitForCompletion=False, onProgress=progress.append,
                        onFinished=finished.append, onState=states.append)
    assert logic.isRunning and job.state == "running"
    standin.runEventLoop(lambda: any(e["stage"] == "tiles" for e in progress))
    logic.cancel()
    standin.runEventLoop(lambda: bool(finished))
    assert finished[0].state == "cancelled" and finished[0].returncode == 130
    assert states[:2] == ["starting", "running"] and states[-1] == "cancelled"
    assert [e["stage"] for e in progress][:2] == ["preprocess", "preprocess"]
    tiles = [e for e in progress if e["stage"] == "tiles"]
    assert 0 < tiles[0]["fraction"] <= 1 and len(tiles) < 5  # stopped before the last tile
    assert segdeep_temp_dirs() == before and not logic.isRunning


def test_input_checks(scene, tmp_path):
    logic = scene[2]
    with pytest.raises(ValueError, match="input volume"):
        logic.segment(None, "fake-abdomen")
    with pytest.raises(ValueError, match="no such training config"):
        logic.train(str(tmp_path / "missing.yaml"))


def test_train_blocking_and_non_blocking(scene, tmp_path):
    standin, _, logic = scene
    config = tmp_path / "recipe.yaml"
    config.write_text("model: {name: unet3d}\n")
    result = logic.train(str(config), ["optimizer.lr=1e-3"])
    assert result.state == "done" and result.outputs == {"model": "/tmp/model"}
    seen = []
    logic.train(str(config), waitForCompletion=False, onProgress=seen.append, onFinished=seen.append)
    standin.runEventLoop(lambda: len(seen) == 2)
    assert seen[0]["stage"] == "epoch" and seen[1].state == "done"
