"""Slicer ``.seg.nrrd`` segmentations (via slicerio) and plain label maps, as ``SimpleITK.Image``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.atomic import atomic_path
from SegDeepLib.io.image import write_image
from SegDeepLib.io.labels import Label, LabelTable, slicer_terminology


def _ijk_to_lps(image: sitk.Image) -> np.ndarray:
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction * np.array(image.GetSpacing(), dtype=float)
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def _geometry_from_ijk_to_lps(matrix: np.ndarray) -> tuple[tuple, tuple, tuple]:
    linear = np.asarray(matrix, dtype=float)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    return tuple(spacing), tuple(np.asarray(matrix)[:3, 3]), tuple(direction.flatten())


def _segment_color(segment: dict) -> tuple[int, int, int]:
    color = segment.get("color", (0.5, 0.5, 0.5))
    return tuple(int(round(float(c) * 255)) for c in color[:3])


def read_segmentation(path: str | os.PathLike) -> tuple[sitk.Image, LabelTable]:
    """Read a ``.seg.nrrd`` into one label map (values 1..N in segment order) and its table.

    Overlapping segments (several layers) are merged; later segments win where they overlap.
    """
    import slicerio

    path = Path(path)
    if not path.exists():
        raise SegDeepError(f"{path}: no such file")
    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:  # slicerio raises many types for bad files
        raise SegDeepError(f"{path}: not a readable Slicer segmentation ({exc})") from None
    voxels = np.asarray(seg["voxels"])  # (layers,) i, j, k
    layers = voxels if voxels.ndim == 4 else voxels[np.newaxis]
    labelmap = np.zeros(layers.shape[1:], dtype=np.uint16)
    labels = []
    for value, segment in enumerate(seg.get("segments", []), start=1):
        layer = layers[int(segment.get("layer", 0))]
        labelmap[layer == int(segment["labelValue"])] = value
        labels.append(Label(value, str(segment.get("name", segment.get("id"))), _segment_color(segment),
                            _strip_context(segment.get("terminology") or {})))
    if labels and labels[-1].value < 256:
        labelmap = labelmap.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(labelmap.transpose(2, 1, 0)))
    spacing, origin, direction = _geometry_from_ijk_to_lps(seg["ijkToLPS"])
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image, LabelTable(tuple(labels), path.name)


def _strip_context(term: dict) -> dict:
    return {k: list(v) for k, v in term.items() if k not in ("contextName", "anatomicContextName")}


def write_segmentation(
    labelmap: sitk.Image, path: str | os.PathLike, table: LabelTable, overwrite: bool = False
) -> Path:
    """Write a label map as ``.seg.nrrd`` (one segment per table entry) or as a plain image.

    Segments absent from the label map are still written (empty), so Slicer shows every organ the
    model knows. Values not in the table raise an error.
    """
    path = Path(path)
    array = sitk.GetArrayViewFromImage(labelmap)
    unknown = sorted(set(np.unique(array).tolist()) - {0} - set(table.values))
    if unknown:
        raise SegDeepError(f"{path}: label values {unknown} are not in label table {table.name!r}")
    if not path.name.lower().endswith(".seg.nrrd"):
        return write_image(labelmap, path, overwrite=overwrite)
    import slicerio

    voxels = np.ascontiguousarray(np.asarray(array, dtype=np.uint8 if max(table.values, default=0) < 256 else np.uint16).transpose(2, 1, 0))
    segments = [_segment_dict(lab) for lab in table.labels]
    segmentation = {
        "voxels": voxels,
        "ijkToLPS": _ijk_to_lps(labelmap),
        "segments": segments,
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
        "referenceImageExtentOffset": [0, 0, 0],
    }
    with atomic_path(path, overwrite=overwrite) as tmp:
        slicerio.write_segmentation(str(tmp), segmentation)
    return path


def _segment_dict(label: Label) -> dict:
    segment = {
        "id": f"Segment_{label.value}",
        "name": label.name,
        "labelValue": label.value,
        "layer": 0,
        "color": [c / 255.0 for c in label.color],
    }
    term = slicer_terminology(label)
    if term:
        segment["terminology"] = term
    return segment
