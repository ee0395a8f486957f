"""Reading and writing volumes (NIfTI, NRRD, MetaImage, DICOM series) as ``SimpleITK.Image``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.atomic import atomic_path
from SegDeepLib.io.integrity import (
    _candidate_slice_files,
    check_complete,
    check_dicom_series,
    read_series_with_gaps,
)
from SegDeepLib.io.suffixes import FORMATS, require_suffix

# ITK prints its warnings straight to stderr, before and around our one-line errors; the checks in
# :mod:`SegDeepLib.io.integrity` report the same problems (naming the file) instead.
sitk.ProcessObject.SetGlobalWarningDisplay(False)
LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES = tuple(f.suffix for f in FORMATS if f.holds == "image")
WRITE_SUFFIXES = tuple(f.suffix for f in FORMATS if f.holds == "image" and f.writable)


def list_dicom_series(folder: str | os.PathLike) -> dict[str, list[str]]:
    """Return ``{series_uid: [files sorted along the slice normal]}`` for a folder (not recursive)."""
    folder = str(folder)
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder) or ()
    return {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid)) for uid in uids}


def _read_dicom_folder(folder: Path, series_uid: str | None, allow_gaps: bool = False) -> sitk.Image:
    series = list_dicom_series(folder)
    if not series:
        raise SegDeepError(f"{folder}: folder holds no DICOM series (no readable DICOM image files)")
    if series_uid is None:
        if len(series) > 1:
            listing = ", ".join(f"{uid} ({len(files)} files)" for uid, files in series.items())
            raise SegDeepError(
                f"{folder}: folder holds {len(series)} DICOM series; pick one with --series-uid: {listing}"
            )
        series_uid = next(iter(series))
    if series_uid not in series:
        raise SegDeepError(f"{folder}: no DICOM series {series_uid}; available: {', '.join(series)}")
    try:
        check_dicom_series(folder, series[series_uid], [f for files in series.values() for f in files])
    except SegDeepError as exc:
        if not allow_gaps:
            raise
        known = {f for files in series.values() for f in files}
        image, notes = read_series_with_gaps(_series_files(folder, series[series_uid], known))
        problem = str(exc).split("; complete the series")[0].split("; replace it")[0]
        LOG.warning("segdeep: warning: %s; read with --allow-gaps: %s", problem, "; ".join(notes[:5]))
        return image
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series[series_uid])
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise SegDeepError(f"{folder}: cannot read DICOM series {series_uid}: {_first_line(exc)}") from None


def _series_files(folder: Path, files: list[str], known: set[str]) -> list[str]:
    """The series' files plus the unreadable candidates beside them (their slices are tried too)."""
    others = [str(p) for p in _candidate_slice_files(folder) if str(p) not in known]
    return list(files) + others


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if "ERROR" not in line.upper()[:8]]
    return (useful or lines or ["unknown error"])[-1][:300]


def read_volume(
    path: str | os.PathLike, series_uid: str | None = None, allow_gaps: bool = False
) -> sitk.Image:
    """Read a volume from an image file (ITK) or a DICOM series folder, keeping its exact geometry
    (``.seg.nrrd`` files: :func:`SegDeepLib.io.formats.read_image`).

    Raises :class:`SegDeepError` naming the file for a missing, unreadable, truncated or non-image
    input, and for a DICOM series with an unreadable or missing slice (unless ``allow_gaps``).
    """
    path = Path(path)
    if not path.exists():
        raise SegDeepError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_dicom_folder(path, series_uid, allow_gaps)
    try:
        check_complete(path)
    except OSError as exc:
        raise SegDeepError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return sitk.ReadImage(str(path))
    except (RuntimeError, OSError) as exc:
        raise SegDeepError(f"{path}: not a readable image ({_first_line(exc)})") from None


def require_3d(image: sitk.Image, name: str = "image") -> sitk.Image:
    """Return a 3D scalar image or raise a clear error (2D, 4D and vector images are refused).

    A 3D image stored with a trailing singleton 4th dimension is squeezed.
    """
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
        dim = 3
    if dim != 3:
        raise SegDeepError(f"{name}: a 3D volume is needed, this image is {dim}D with size {image.GetSize()}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise SegDeepError(
            f"{name}: a scalar volume is needed, this one has {image.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    return image


def check_finite(image: sitk.Image, name: str = "image") -> None:
    """Raise if the image has NaN or infinite voxels."""
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise SegDeepError(f"{name}: {bad} voxels are NaN or infinite; fix or mask them before segmenting")


def check_volume(image: sitk.Image, name: str | os.PathLike) -> sitk.Image:
    """The checks every segmentation input needs, each error naming the file: a 3D scalar
    volume (2D, 4D, RGB refused), no NaN/Inf voxels, not a constant image."""
    name = str(name)
    image = require_3d(image, name)
    check_finite(image, name)
    array = sitk.GetArrayViewFromImage(image)
    if array.size and array.min() == array.max():
        raise SegDeepError(
            f"{name}: every voxel has the same value ({array.flat[0]}); the image holds no anatomy "
            "(an empty or blank export?)"
        )
    return image


def intensity_warning(image: sitk.Image, modality: str, model: str, name: str) -> str | None:
    """A warning when the voxel values do not fit the model card's modality (uint8 or MR-like
    input to a CT model, CT-like input to an MR model), else ``None``."""
    array = sitk.GetArrayViewFromImage(image)
    if not array.size:
        return None
    low, high = float(array.min()), float(array.max())
    reason = None
    if modality.upper() == "CT":
        if image.GetPixelID() == sitk.sitkUInt8:
            reason = f"8-bit voxels ({low:g}..{high:g}) cannot be CT Hounsfield units"
        elif low > -200:
            reason = (f"values {low:g}..{high:g} have nothing below -200 (no air, lung or fat): "
                      "not a CT in Hounsfield units (an MR, or a rescaled export?)")
    elif modality.upper() == "MR" and low < -500:
        reason = f"values {low:g}..{high:g} look like CT Hounsfield units, not MR"
    if reason is None:
        return None
    return f"{name}: {reason}; model {model!r} expects {modality}, so its result will not be meaningful"


def write_image(
    image: sitk.Image, path: str | os.PathLike, overwrite: bool = False, compress: bool = True
) -> Path:
    """Write a volume atomically (.nii.gz, .nii, .nrrd, .mha). Geometry is written as is."""
    path = require_suffix(path, WRITE_SUFFIXES)
    with atomic_path(path, overwrite=overwrite) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return path
