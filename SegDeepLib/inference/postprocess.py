"""Label-map postprocessing chosen per model: largest connected component and hole filling per organ."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import SimpleITK as sitk

from SegDeepLib.io.labels import LabelTable
from SegDeepLib.preprocessing.regions import largest_component


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill 3D cavities of a binary mask (background not connected to the border), as uint8."""
    mask = np.asarray(mask, dtype=np.uint8)
    if not mask.any():
        return mask.copy()
    filled = sitk.BinaryFillhole(
        sitk.GetImageFromArray(mask), fullyConnected=False, foregroundValue=1
    )
    return sitk.GetArrayFromImage(filled).astype(np.uint8)


def _selected(option: Any, table: LabelTable) -> list[int]:
    """Label values an option applies to: ``True`` = all, a list of names = those present in the table."""
    if option is True:
        return table.values
    if not option:
        return []
    names = (
        set(option) if isinstance(option, Iterable) and not isinstance(option, str) else {option}
    )
    return [lab.value for lab in table.labels if lab.name in names]


def keep_largest_component(labels: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """Voxels of each listed label outside its largest connected component become background."""
    out = np.array(labels, copy=True)
    for value in values:
        mask = out == value
        if mask.any():
            out[mask & (largest_component(mask) == 0)] = 0
    return out


def fill_label_holes(labels: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """Background voxels enclosed by one label are given to that label (other labels are untouched)."""
    out = np.array(labels, copy=True)
    for value in values:
        mask = out == value
        if mask.any():
            out[(fill_holes(mask) > 0) & (out == 0)] = value
    return out


def postprocess(labels: np.ndarray, table: LabelTable, options: Mapping[str, Any]) -> np.ndarray:
    """Apply ``{"largest_component": ..., "fill_holes": ...}`` (True, False or organ names)."""
    labels = keep_largest_component(labels, _selected(options.get("largest_component"), table))
    return fill_label_holes(labels, _selected(options.get("fill_holes"), table))
