"""Results -> segmentation nodes (names, colours, terminology, geometry) and Segment Editor hand-over.

Slicer glue: every call here is listed in docs/slicer-conventions.md, or (parent transforms) in the
test stand-in's ``VERIFIED_ELSEWHERE`` with the Slicer source it was checked in.
Path used: one binary mask per label (``AddEmptySegment`` + ``updateSegmentBinaryLabelmapFromArray``
with the input volume as reference), so no temporary nodes are created.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from SegDeepHelpers.terminology import terminologyString


def _slicer() -> Any:
    import slicer

    return slicer


def volumeArrayAndMatrix(volumeNode: Any) -> tuple[np.ndarray, np.ndarray]:
    """A copy of the voxels (KJI) and the 4x4 IJK-to-RAS matrix of a volume node."""
    import vtk

    slicer = _slicer()
    array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return array, slicer.util.arrayFromVTKMatrix(matrix)


def newSegmentationNode(name: str) -> Any:
    node = _slicer().mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    return node


def placeUnderTransformOf(node: Any, inputVolume: Any) -> Optional[str]:
    """Put ``node`` under the input volume's parent transform (or under none, as the volume).

    Call it before writing masks: the masks are on the volume's local grid, and with both nodes
    under the same transform (linear or not) they overlay the transformed volume exactly; Slicer
    imports them without resampling. Returns the transform node ID, or None.
    """
    transformId = inputVolume.GetTransformNodeID()
    node.SetAndObserveTransformNodeID(transformId)
    return transformId


def prepareSegmentation(segmentationNode: Any, inputVolume: Any) -> Optional[str]:
    """Reference geometry = input volume; same parent transform as the input (returns its ID or
    None); placed next to the input in the subject hierarchy."""
    slicer = _slicer()
    transformId = placeUnderTransformOf(segmentationNode, inputVolume)
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
    segmentationNode.SetNodeReferenceID(segmentationNode.GetReferenceImageGeometryReferenceRole(),
                                        inputVolume.GetID())
    shNode = slicer.mrmlScene.GetSubjectHierarchyNode()
    volumeItem = shNode.GetItemByDataNode(inputVolume)
    shNode.SetItemParent(shNode.GetItemByDataNode(segmentationNode), shNode.GetItemParent(volumeItem))
    return transformId


def setSegmentTerminology(segment: Any, entry: str) -> None:
    """Terminology tag: ``SetTerminology`` on Slicer >= 5.10, the tag API on 5.8."""
    if not entry:
        return
    if hasattr(segment, "SetTerminology"):
        segment.SetTerminology(entry)
    else:
        segment.SetTag(segment.GetTerminologyEntryTagName(), entry)


def segmentIdByExactName(segmentation: Any, name: str) -> str:
    """The segment named exactly ``name`` ("" if none). Slicer's ``GetSegmentIdBySegmentName``
    ignores case, so a user's "Liver" would be taken for the label "liver" and overwritten."""
    for segmentId in segmentation.GetSegmentIDs():
        if segmentation.GetSegment(segmentId).GetName() == name:
            return segmentId
    return ""


def importLabelArray(segmentationNode: Any, labelsKJI: np.ndarray, table: Any,
                     inputVolume: Any) -> list[str]:
    """One segment per label of ``table`` present in ``labelsKJI`` (on the input's grid).

    Segments with exactly the label's name are overwritten in place; returns the segment IDs.
    """
    slicer = _slicer()
    from SegDeepLib.core.labels import slicer_terminology

    segmentation = segmentationNode.GetSegmentation()
    segmentIds = []
    for label in table.labels:
        mask = labelsKJI == label.value
        if not mask.any():
            continue
        rgb = [c / 255.0 for c in label.color]
        segmentId = segmentIdByExactName(segmentation, label.name)
        if not segmentId:
            segmentId = segmentation.AddEmptySegment("", label.name, rgb)
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            mask.astype(np.uint8), segmentationNode, segmentId, inputVolume)
        segment = segmentation.GetSegment(segmentId)
        segment.SetName(label.name)
        segment.SetColor(*rgb)
        setSegmentTerminology(segment, terminologyString(slicer_terminology(label)))
        segmentIds.append(segmentId)
    return segmentIds


def backupSegments(segmentationNode: Any, table: Any, inputVolume: Any, name: str) -> Optional[Any]:
    """The undo state kept before an update: the segments an import would overwrite (same names
    as labels of ``table``) copied, on the input's grid and under its transform, into a new node.
    Returns None when nothing would be overwritten."""
    slicer = _slicer()
    segmentation = segmentationNode.GetSegmentation()
    backup = None
    for label in table.labels:
        segmentId = segmentIdByExactName(segmentation, label.name)
        if not segmentId:
            continue
        if backup is None:
            backup = newSegmentationNode(name)
            placeUnderTransformOf(backup, inputVolume)
            backup.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, inputVolume)
        rgb = [c / 255.0 for c in label.color]
        newId = backup.GetSegmentation().AddEmptySegment("", label.name, rgb)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, backup, newId, inputVolume)
    return backup


def showIn3D(segmentationNode: Any, show: bool) -> None:
    if show:
        segmentationNode.CreateClosedSurfaceRepresentation()
    else:
        segmentationNode.RemoveClosedSurfaceRepresentation()


def openInSegmentEditor(segmentationNode: Any, sourceVolume: Any) -> Any:
    """Switch to the Segment Editor with this segmentation and its source volume selected."""
    slicer = _slicer()
    slicer.util.selectModule("SegmentEditor")
    editorWidget = slicer.util.getModuleWidget("SegmentEditor")
    editorWidget.editor.setSegmentationNode(segmentationNode)
    editorWidget.editor.setSourceVolumeNode(sourceVolume)
    return editorWidget
