"""The stand-in is strict and honest: it offers only names from slicer-conventions.md (Slicer), its
Qt is the real PythonQt, it refuses everything else, and records what the module used."""

from __future__ import annotations

import re

import pytest

from Testing.conftest import REPO
from Testing.SegDeep.helpers import fake_python, oblique_ijk_to_ras, phantom_array

CONVENTIONS = REPO.parent / "shared" / "docs" / "slicer-conventions.md"
# Names of the stand-in's own plumbing, not offered as Slicer API (VTK's observer core is used
# only by the stand-in's VTKObservationMixin and parameter-node wrapper).
PLUMBING = {"AddObserver", "RemoveObserver", "Modified", "connect", "disconnect"}


@pytest.fixture
def conventions() -> str:
    if not CONVENTIONS.exists():
        pytest.skip(f"{CONVENTIONS} not available")
    return CONVENTIONS.read_text()


def _public_methods(cls) -> set[str]:
    """Methods the stand-in itself defines (not the wrapped Qt base class's)."""
    import inspect

    return {n for n, v in vars(cls).items() if not n.startswith("_") and inspect.isfunction(v)}


def _verified(name: str, conventions: str) -> bool:
    """In slicer-conventions.md, or in the stand-in's short list of names checked in Slicer's source."""
    from Testing.SegDeep.slicer_standin import VERIFIED_ELSEWHERE

    return bool(re.search(rf"\b{re.escape(name)}\b", conventions)) or name in VERIFIED_ELSEWHERE


def test_names_verified_outside_the_conventions_are_few_and_cite_their_source(standin, conventions):
    assert set(standin.VERIFIED_ELSEWHERE) == {
        "GetName", "GetTransformNodeID", "SetAndObserveTransformNodeID", "GetParentTransformNode",
        "currentNode", "setCurrentNode", "segmentationNode"}
    for name, source in standin.VERIFIED_ELSEWHERE.items():
        assert not re.search(rf"\b{name}\b", conventions), f"{name} is in the conventions now"
        assert re.search(r"\.h\b.*\b[0-9a-f]{40}\b", source), f"{name}: file and commit needed"


def test_module_members_are_all_in_the_conventions(standin, conventions):
    for module, names in standin.ALLOWED.items():
        for name in names:
            assert _verified(name, conventions), f"{module}.{name}"


def test_fake_mrml_methods_are_all_in_the_conventions(standin, conventions):
    classes = [standin.vtkMRMLScalarVolumeNode, standin.vtkMRMLSegmentationNode, standin.vtkSegment,
               standin._TransformableNode, standin.vtkMRMLTransformNode,
               standin.vtkSegmentation, standin.vtkMRMLSubjectHierarchyNode, standin.vtkMRMLScene,
               standin.vtkMatrix4x4, standin._Node, standin.SegmentEditorWidget,
               standin.qMRMLNodeComboBox, standin.qMRMLSegmentationShow3DButton,
               standin.qMRMLWidget, standin.ctkPathLineEdit, standin.ctkCollapsibleButton,
               standin.ScriptedLoadableModuleWidget,
               standin.ScriptedLoadableModuleLogic, standin.VTKObservationMixin]
    for cls in classes:
        for name in _public_methods(cls) - PLUMBING:
            assert _verified(name, conventions), f"{cls.__name__}.{name}"
    wrapper = standin.parameterNodeWrapper(type("P", (), {"__annotations__": {"x": bool}}))
    for name in _public_methods(wrapper) - PLUMBING:
        assert name in conventions, f"parameterNodeWrapper.{name}"


def test_unknown_names_raise_attribute_error(standin):
    slicer = standin.slicer
    with pytest.raises(AttributeError, match="not in slicer-conventions"):
        _ = slicer.util.updateSegmentationFromLabelmap  # invented by tutorials; not in Slicer
    with pytest.raises(AttributeError):
        _ = slicer.util.addSegmentFromLabelmapVolume
    with pytest.raises(AttributeError):
        _ = slicer.app
    with pytest.raises(AttributeError):
        standin.slicer.mrmlScene.GetNodeByID("x")
    volume = slicer.util.addVolumeFromArray(phantom_array(), oblique_ijk_to_ras())
    with pytest.raises(AttributeError):
        volume.GetDescription()  # real (vtkMRMLNode), but not verified for this module: refused
    with pytest.raises(AttributeError):
        volume.HardenTransform()  # real, but not verified for this module: refused


def test_module_uses_only_conventions_api_in_a_full_run(standin, conventions, tmp_path):
    """Drive setup + segment + editor hand-over and check every recorded Slicer call."""
    import SegDeep

    widget = SegDeep.SegDeepWidget()
    widget.setup()
    volume = standin.slicer.util.addVolumeFromArray(phantom_array(), oblique_ijk_to_ras(), "CT")
    widget.logic.python = fake_python(tmp_path)
    result = widget.logic.segment(volume, "any", show3D=True)
    from SegDeepHelpers.segmentation import openInSegmentEditor

    openInSegmentEditor(result.segmentationNode, volume)
    used = sorted(set(standin.RECORD))
    assert len(used) > 25
    for owner, name in used:
        assert _verified(name, conventions), f"{owner}.{name}"
    (tmp_path / "slicer_calls.txt").write_text("\n".join(f"{o}.{n}" for o, n in used))


def test_module_sources_import_no_unlisted_slicer_modules(helpers_path):
    """SegDeep.py and SegDeepHelpers import Slicer only through the modules the stand-in offers."""
    from Testing.SegDeep.slicer_standin import MODULE_NAMES

    allowed = set(MODULE_NAMES) | {"PyTorchUtils", "qt"}
    sources = [helpers_path / "SegDeep.py", *sorted((helpers_path / "SegDeepHelpers").glob("*.py"))]
    pattern = re.compile(r"^\s*(?:from|import)\s+(slicer[\w.]*|qt|ctk|vtk|PyTorchUtils)\b", re.MULTILINE)
    for source in sources:
        for module in pattern.findall(source.read_text()):
            assert module in allowed, f"{source.name} imports {module}"
