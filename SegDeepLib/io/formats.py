"""Every file format in one table: suffix -> what it holds, how it is read and written.

=============  ==============  =============================================  ==========
suffix         holds           read                                           written
=============  ==============  =============================================  ==========
``.seg.nrrd``  segmentation    :func:`~.segmentation.read_segmentation`       yes
``.nii.gz``    image           ITK (+ :mod:`.integrity` checks)               yes
``.nii``       image           ITK (+ checks)                                 yes
``.nrrd``      image           ITK                                            yes
``.mha``       image           ITK (+ checks)                                 yes
``.nhdr``      image           ITK                                            no
``.mhd``       image           ITK                                            no
``.npy``       probabilities   numpy, ``allow_pickle=False``                  yes
``.dcm``       DICOM SEG       :func:`~.dicom_seg.read_dicom_seg`             yes (DICOM input)
folder         DICOM series    ITK/GDCM (+ slice checks)                      no
=============  ==============  =============================================  ==========

Probability maps are ``(K, k, j, i)`` float32 arrays on a reference grid: ``.npy``, or a vector
image with the reference's geometry (any image suffix). Every write goes through
:mod:`.atomic` (temporary file renamed into place). ``read_image`` dispatches on this table, so
:mod:`.image` (volumes) and :mod:`.segmentation` (``.seg.nrrd``) never import each other's readers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.atomic import atomic_write
from SegDeepLib.io.image import read_volume, write_image
from SegDeepLib.io.labels import LabelTable
from SegDeepLib.io.segmentation import read_segmentation
from SegDeepLib.io.suffixes import (
    FORMATS,
    LABEL_MAP_SUFFIXES,
    PROBABILITY_SUFFIXES,
    Format,
    format_of,
    require_suffix,
)

__all__ = [
    "FORMATS",
    "LABEL_MAP_SUFFIXES",
    "PROBABILITY_SUFFIXES",
    "Format",
    "format_of",
    "read_image",
    "read_label_map",
    "read_probabilities",
    "require_suffix",
    "write_probabilities",
]


def read_image(
    path: str | os.PathLike, series_uid: str | None = None, allow_gaps: bool = False
) -> sitk.Image:
    """Read a volume from a file or a DICOM series folder, keeping its exact geometry.

    ``.seg.nrrd`` gives its label map (values 1..N in segment order). Raises
    :class:`SegDeepError` naming the file for a missing, unreadable, truncated or non-image input,
    and for a DICOM series with an unreadable or missing slice (unless ``allow_gaps``).
    """
    entry = format_of(path)
    if entry is not None and entry.holds == "segmentation" and Path(path).is_file():
        return read_segmentation(path)[0]
    return read_volume(path, series_uid=series_uid, allow_gaps=allow_gaps)


def read_label_map(path: str | os.PathLike, table: LabelTable | None) -> tuple[sitk.Image, LabelTable | None]:
    """A label map and the table it carries; a ``.seg.nrrd`` is renumbered to ``table``'s values
    by segment name (plain images carry no table: ``None``)."""
    path = Path(path)
    entry = format_of(path)
    if entry is None or entry.holds != "segmentation":
        return read_image(path), None
    image, own = read_segmentation(path)
    if table is None:
        return image, own
    lookup = np.zeros(max(own.values, default=0) + 1, dtype=np.int64)
    for label in own.labels:
        if label.name not in table.names:
            raise SegDeepError(f"{path}: segment {label.name!r} is not in the label table "
                               f"({', '.join(table.names)})")
        lookup[label.value] = table.by_name(label.name).value
    renumbered = sitk.GetImageFromArray(lookup[sitk.GetArrayFromImage(image)].astype(np.uint16))
    renumbered.CopyInformation(image)
    return renumbered, table


def write_probabilities(
    probs: np.ndarray, reference: sitk.Image, path: str | os.PathLike, overwrite: bool = False
) -> Path:
    """``(K, k, j, i)`` probabilities as ``.npy`` or as a vector image on ``reference``'s grid
    (atomic either way)."""
    path = require_suffix(path, PROBABILITY_SUFFIXES, "probabilities")
    probs = np.asarray(probs, dtype=np.float32)
    if format_of(path).holds == "probabilities":

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, probs)

        return atomic_write(path, save, overwrite=overwrite)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(probs, 0, -1)), isVector=True)
    image.CopyInformation(reference)
    return write_image(image, path, overwrite=overwrite)


def read_probabilities(path: str | os.PathLike, reference: sitk.Image) -> np.ndarray:
    """``(L, Z, Y, X)`` float32 probabilities on ``reference``'s grid, from ``.npy`` or a 4D /
    vector image; checked: shape, at least 2 classes, finite and non-negative."""
    path = Path(path)
    if not path.exists():
        raise SegDeepError(f"{path}: no such file")
    entry = format_of(path)
    if entry is not None and entry.holds == "probabilities":
        try:
            probs = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise SegDeepError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0][:200]})") from None
        if not (np.issubdtype(probs.dtype, np.floating) or np.issubdtype(probs.dtype, np.integer)):
            raise SegDeepError(f"{path}: holds {probs.dtype} values; probabilities must be numbers")
    else:
        image = read_image(path)
        probs = sitk.GetArrayFromImage(image)
        if image.GetNumberOfComponentsPerPixel() > 1:
            probs = np.moveaxis(probs, -1, 0)
        elif image.GetDimension() != 4:
            raise SegDeepError(f"{path}: expected a 4D or vector image of class probabilities")
    grid = sitk.GetArrayViewFromImage(reference).shape
    if probs.ndim != 4 or probs.shape[1:] != grid or probs.shape[0] < 2:
        raise SegDeepError(
            f"{path}: probabilities of shape {probs.shape}; expected (L >= 2, {grid[0]}, "
            f"{grid[1]}, {grid[2]}) on the image grid"
        )
    if not np.isfinite(probs).all() or probs.min() < 0:
        raise SegDeepError(f"{path}: probabilities must be finite and non-negative")
    return probs.astype(np.float32)
