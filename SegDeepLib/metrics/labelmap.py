"""Per-class metrics between two label maps (``SimpleITK.Image``) on the same grid.

Each class is evaluated on the bounding box of (prediction ∪ reference) for that class, so a
label map with dozens of small organs is scored quickly; the crop does not change any value
(see :func:`SegDeepLib.metrics.surface.crop_to_union`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.layout import same_grid
from SegDeepLib.metrics.overlap import OVERLAP_METRICS, confusion, overlap_metrics
from SegDeepLib.metrics.surface import DISTANCE_METRICS, distance_metrics

METRICS = OVERLAP_METRICS + DISTANCE_METRICS
GRID_TOLERANCE = 1e-4  # mm (origin, spacing) and cosine (direction): float32 header round-off


def evaluate_masks(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 2.0
) -> dict[str, float]:
    """Every metric in :data:`METRICS` for two boolean masks (``spacing`` in array axis order)."""
    result = overlap_metrics(confusion(pred, ref))
    result.update(distance_metrics(pred, ref, spacing, tolerance_mm))
    return result


def describe_grid_mismatch(pred: sitk.Image, ref: sitk.Image) -> str:
    """Say which of size, spacing, origin and direction differ between two images."""
    parts = []
    for what, getter in (("size", "GetSize"), ("spacing", "GetSpacing"), ("origin", "GetOrigin"),
                         ("direction", "GetDirection")):
        a, b = getattr(pred, getter)(), getattr(ref, getter)()
        if len(a) != len(b) or not np.allclose(a, b, atol=GRID_TOLERANCE, rtol=0):
            parts.append(f"{what} {_fmt(a)} vs {_fmt(b)}")
    return "; ".join(parts)


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def check_label_maps(pred: sitk.Image, ref: sitk.Image, pred_name: str = "prediction",
                     ref_name: str = "reference") -> None:
    """Raise :class:`SegDeepError` unless both are scalar integer label maps on the same grid."""
    for image, name in ((pred, pred_name), (ref, ref_name)):
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise SegDeepError(f"{name}: a label map must have one value per voxel")
        array = sitk.GetArrayViewFromImage(image)
        if np.issubdtype(array.dtype, np.floating) and not np.array_equal(array, np.round(array)):
            raise SegDeepError(f"{name}: not a label map (non-integer voxel values); "
                               "pass integer labels, not probabilities")
        if array.size and (array.min() < 0 or array.max() > 2**31):
            raise SegDeepError(f"{name}: label values must lie in 0..2^31 "
                               f"(found {array.min()}..{array.max()})")
    if pred.GetDimension() != ref.GetDimension() or not same_grid(pred, ref, tol=GRID_TOLERANCE):
        raise SegDeepError(f"{pred_name}: not on the grid of {ref_name} "
                           f"({describe_grid_mismatch(pred, ref)}); resample the prediction onto "
                           "the reference grid first")


def present_labels(*images: sitk.Image) -> list[int]:
    """Sorted non-zero label values present in any of the images."""
    values: set[int] = set()
    for image in images:
        values.update(int(v) for v in np.unique(sitk.GetArrayViewFromImage(image)) if v != 0)
    return sorted(values)


def _label_array(image: sitk.Image) -> np.ndarray:
    """The voxel array in an integer type (float label maps hold integral values, checked before)."""
    array = sitk.GetArrayFromImage(image)
    return array.astype(np.int64) if array.dtype.kind == "f" else array


def _bounding_boxes(array: np.ndarray, labels: Iterable[int]) -> dict[int, tuple[slice, ...]]:
    """Bounding box (array index slices) of each label that is present, via SimpleITK."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.GetImageFromArray(array.astype(np.uint32)))
    wanted = {int(v) for v in labels}
    boxes = {}
    ndim = array.ndim
    for value in stats.GetLabels():
        if value in wanted:
            box = stats.GetBoundingBox(value)  # (x, y, z, sx, sy, sz)
            start, size = box[:ndim][::-1], box[ndim:][::-1]
            boxes[int(value)] = tuple(slice(s, s + n) for s, n in zip(start, size))
    return boxes


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a or b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def evaluate_label_maps(
    pred: sitk.Image,
    ref: sitk.Image,
    labels: Sequence[int] | None = None,
    tolerance_mm: float = 2.0,
    names: Mapping[int, str] | None = None,
) -> list[dict[str, object]]:
    """Per-class metrics between a predicted and a reference label map on the same grid.

    ``labels`` defaults to every non-zero value present in either map. Returns one row per label:
    ``{"label": value, "name": ..., "pred_voxels": n, "ref_voxels": n, <metric>: value, ...}``.
    """
    check_label_maps(pred, ref)
    labels = present_labels(pred, ref) if labels is None else [int(v) for v in labels]
    pred_arr, ref_arr = _label_array(pred), _label_array(ref)
    spacing = tuple(reversed(pred.GetSpacing()))
    pred_boxes, ref_boxes = _bounding_boxes(pred_arr, labels), _bounding_boxes(ref_arr, labels)
    rows = []
    for value in labels:
        box = _union_box(pred_boxes.get(value), ref_boxes.get(value))
        p = pred_arr[box] == value if box else np.zeros((1,) * pred_arr.ndim, bool)
        r = ref_arr[box] == value if box else np.zeros((1,) * ref_arr.ndim, bool)
        row: dict[str, object] = {
            "label": value,
            "name": (names or {}).get(value, str(value)),
            "pred_voxels": int(np.count_nonzero(p)),
            "ref_voxels": int(np.count_nonzero(r)),
        }
        row.update(evaluate_masks(p, r, spacing, tolerance_mm))
        rows.append(row)
    return rows
