"""Resampling to a target spacing and back onto an original grid (SimpleITK).

Spacings given to these functions are in **SimpleITK index order** ``(i, j, k)`` because they act on
``sitk.Image`` objects; :mod:`SegDeepLib.preprocessing.pipeline` converts from the canonical
``(Z, Y, X)`` order of network arrays.

The resampled grid keeps the input's direction matrix and is *centred* on the input grid: the
voxel centres of both grids share the same centre of mass, so resampling at an unchanged spacing is
the identity. Going back with :func:`resample_to_reference` puts the result on the reference grid
exactly (size, origin, spacing and direction are copied, not recomputed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError

IMAGE_INTERPOLATIONS = {
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
    "nearest": sitk.sitkNearestNeighbor,
}
LABEL_INTERPOLATIONS = ("nearest", "onehot_linear")


def _interpolator(name: str) -> int:
    if name not in IMAGE_INTERPOLATIONS:
        raise SegDeepError(
            f"interpolation '{name}': unknown; use one of {', '.join(IMAGE_INTERPOLATIONS)}"
        )
    return IMAGE_INTERPOLATIONS[name]


def _check_spacing(spacing: Sequence[float], dimension: int) -> tuple[float, ...]:
    values = tuple(float(s) for s in spacing)
    if len(values) != dimension or not all(np.isfinite(values)) or min(values) <= 0:
        raise SegDeepError(
            f"target spacing {list(spacing)}: need {dimension} positive finite values (mm)"
        )
    return values


def resampled_size(
    size: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> tuple[int, ...]:
    """Number of voxels per axis covering the same extent at the target spacing (at least 1)."""
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(size, spacing, target))


def centred_grid(image: sitk.Image, target_spacing: Sequence[float]) -> sitk.Image:
    """A reference grid with the image's direction, the target spacing and a centred origin.

    The returned image has the full target size (voxels are allocated as uint8 zeros).
    """
    target = _check_spacing(target_spacing, image.GetDimension())
    size = resampled_size(image.GetSize(), image.GetSpacing(), target)
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    shift = [
        ((n - 1) * s - (m - 1) * t) / 2.0
        for n, s, m, t in zip(image.GetSize(), image.GetSpacing(), size, target)
    ]
    origin = np.array(image.GetOrigin(), dtype=float) + direction @ np.array(shift)
    grid = sitk.Image([int(n) for n in size], sitk.sitkUInt8)
    grid.SetSpacing(target)
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(tuple(float(o) for o in origin))
    return grid


def same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    """True when both images have bit-identical size, spacing, origin and direction."""
    return (
        a.GetSize() == b.GetSize()
        and a.GetSpacing() == b.GetSpacing()
        and a.GetOrigin() == b.GetOrigin()
        and a.GetDirection() == b.GetDirection()
    )


def resample_to_reference(
    image: sitk.Image, reference: sitk.Image, interpolation: str = "linear", default: float = 0.0
) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid (geometry copied exactly).

    ``interpolation`` is ``"linear"``, ``"bspline"`` or ``"nearest"`` (labels). Points of the reference
    grid outside the image take the nearest image voxel (no artificial zero border). The pixel type is
    kept. When the grids are identical the voxels are returned unchanged.
    """
    interpolator = _interpolator(interpolation)
    if same_geometry(image, reference):
        out = sitk.Image(image)
        return out
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(reference)
    resampler.SetInterpolator(interpolator)
    resampler.SetDefaultPixelValue(default)
    resampler.SetOutputPixelType(image.GetPixelID())
    resampler.SetUseNearestNeighborExtrapolator(True)
    return resampler.Execute(image)


def resample_to_spacing(
    image: sitk.Image, spacing: Sequence[float], interpolation: str = "linear"
) -> sitk.Image:
    """Resample an image to ``spacing`` (mm, (i, j, k) order) on the centred grid.

    Use ``"linear"`` or ``"bspline"`` for intensities (float output recommended: cast first) and
    ``"nearest"`` for label maps (see also :func:`resample_labels_onehot`).
    """
    return resample_to_reference(image, centred_grid(image, spacing), interpolation)


def resample_labels_onehot(
    labels: sitk.Image, reference: sitk.Image, values: Sequence[int] | None = None
) -> sitk.Image:
    """Resample a label map by linear interpolation of each class's indicator, then argmax.

    Smoother than nearest neighbour when downsampling. ``values`` lists the label values to keep
    (default: those present); a voxel where every interpolated indicator is 0 gets the first value.
    The output has the label map's pixel type and the reference's geometry.
    """
    array = sitk.GetArrayViewFromImage(labels)
    values = sorted(int(v) for v in (np.unique(array) if values is None else values))
    if not values:
        raise SegDeepError("label map: no label values to resample")
    best = None
    winner = None
    for value in values:
        indicator = sitk.GetImageFromArray((array == value).astype(np.float32))
        indicator.CopyInformation(labels)
        score = sitk.GetArrayFromImage(resample_to_reference(indicator, reference, "linear"))
        if best is None:
            best, winner = score.copy(), np.full(score.shape, value, dtype=array.dtype)
            continue
        better = score > best
        best[better] = score[better]
        winner[better] = value
    out = sitk.GetImageFromArray(winner)
    out.CopyInformation(reference)
    return out
