"""Candidate regions of the cascade paper and cropping to them.

- C1 = body mask: threshold, slice-wise hole filling, largest connected component
  (:func:`body_mask_array`, :func:`body_mask`).
- C2 = foreground labels dilated by ``r`` voxels, exact Euclidean ball (:func:`dilate_foreground`).
- :func:`region_box` / :func:`crop` / :func:`paste`: a region's bounding box with a margin, and the
  exact inverse (paste back into the full grid).

Array functions work on ``(Z, Y, X)`` arrays (any leading channel axes for crop/paste); the image
functions keep the image's grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError


def _fill_holes_slicewise(mask: np.ndarray) -> np.ndarray:
    """Fill holes in each axial slice (axis 0), so air inside the body (bowel, lungs) is included."""
    out = np.empty_like(mask)
    for z in range(mask.shape[0]):
        if mask[z].any():
            filled = sitk.BinaryFillhole(
                sitk.GetImageFromArray(mask[z]), fullyConnected=False, foregroundValue=1
            )
            out[z] = sitk.GetArrayViewFromImage(filled)
        else:
            out[z] = 0
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 3D connected component (face connectivity) of a binary mask, as uint8."""
    mask = np.asarray(mask, dtype=np.uint8)
    if not mask.any():
        return mask.copy()
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(mask), False)
    relabelled = sitk.RelabelComponent(components, sortByObjectSize=True)
    return (sitk.GetArrayViewFromImage(relabelled) == 1).astype(np.uint8)


def body_mask_array(
    array: np.ndarray, threshold: float = -500.0, fill_holes: bool = True, largest: bool = True
) -> np.ndarray:
    """C1 on a canonical ``(Z, Y, X)`` array: ``array > threshold``, holes filled per axial slice,
    largest connected component. Returns uint8 {0, 1}.
    """
    mask = (np.asarray(array) > threshold).astype(np.uint8)
    if fill_holes:
        mask = _fill_holes_slicewise(mask)
    if largest:
        mask = largest_component(mask)
    return mask


def body_mask(
    image: sitk.Image, threshold: float = -500.0, fill_holes: bool = True, largest: bool = True
) -> sitk.Image:
    """C1 (body mask, uint8) on the image's grid; holes are filled in axial (patient S-I) slices."""
    from SegDeepLib.io.layout import from_canonical, to_canonical

    array, layout = to_canonical(image, dtype=None)
    return from_canonical(body_mask_array(array, threshold, fill_holes, largest), layout)


def dilate_foreground(labels: sitk.Image, radius: float = 3.0, in_mm: bool = False) -> sitk.Image:
    """C2: every voxel within Euclidean distance ``radius`` of a foreground (label > 0) voxel.

    The distance is in voxels (default; the cascade paper's r = 3) or in mm (``in_mm=True``, using
    the image spacing). Returns a uint8 {0, 1} mask on the label map's grid.
    """
    if not (np.isfinite(radius) and radius >= 0):
        raise SegDeepError(f"dilation radius {radius}: need a finite value >= 0")
    foreground = sitk.Cast(
        sitk.GetImageFromArray((sitk.GetArrayViewFromImage(labels) > 0).astype(np.uint8)),
        sitk.sitkUInt8,
    )
    foreground.CopyInformation(labels)
    if not sitk.GetArrayViewFromImage(foreground).any():
        return foreground
    distance = sitk.SignedMaurerDistanceMap(
        foreground,
        insideIsPositive=False,
        squaredDistance=True,
        useImageSpacing=in_mm,
        backgroundValue=0,
    )
    within = (sitk.GetArrayViewFromImage(distance) <= radius * radius + 1e-6).astype(np.uint8)
    out = sitk.GetImageFromArray(within)
    out.CopyInformation(labels)
    return out


@dataclass(frozen=True)
class CropBox:
    """A box ``[start, stop)`` per array axis inside a full array of shape ``full_shape``."""

    start: tuple[int, ...]
    stop: tuple[int, ...]
    full_shape: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    def to_dict(self) -> dict:
        return {
            "start": list(self.start),
            "stop": list(self.stop),
            "full_shape": list(self.full_shape),
        }

    @classmethod
    def full(cls, shape: Sequence[int]) -> CropBox:
        """The box covering the whole array (no crop)."""
        shape = tuple(int(s) for s in shape)
        return cls((0,) * len(shape), shape, shape)


def margin_voxels(margin_mm: float, spacing: Sequence[float]) -> tuple[int, ...]:
    """A margin in mm as whole voxels per axis (rounded up), for spacings in the array's axis order."""
    if not (np.isfinite(margin_mm) and margin_mm >= 0):
        raise SegDeepError(f"margin {margin_mm} mm: need a finite value >= 0")
    return tuple(math.ceil(margin_mm / float(s) - 1e-9) for s in spacing)


def region_box(mask: np.ndarray, margin: Sequence[int] | int = 0) -> CropBox:
    """Bounding box of the nonzero voxels of ``mask``, grown by ``margin`` voxels and clipped."""
    mask = np.asarray(mask)
    margin = (int(margin),) * mask.ndim if np.isscalar(margin) else tuple(int(m) for m in margin)
    if not mask.any():
        raise SegDeepError(
            "crop region is empty: no voxel to crop to (check the threshold or the region mask)"
        )
    start, stop = [], []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        start.append(max(0, int(hits[0]) - margin[axis]))
        stop.append(min(mask.shape[axis], int(hits[-1]) + 1 + margin[axis]))
    return CropBox(tuple(start), tuple(stop), tuple(mask.shape))


def crop(array: np.ndarray, box: CropBox) -> np.ndarray:
    """The box's part of ``array`` (the last ``len(box.start)`` axes are cropped; a copy)."""
    spatial = len(box.start)
    if tuple(array.shape[-spatial:]) != box.full_shape:
        raise ValueError(
            f"array shape {array.shape} does not end with the box's full shape {box.full_shape}"
        )
    return np.ascontiguousarray(array[(Ellipsis,) + box.slices])


def paste(array: np.ndarray, box: CropBox, fill: float | Sequence[float] = 0) -> np.ndarray:
    """Exact inverse of :func:`crop`: put ``array`` back into a full array filled with ``fill``.

    ``fill`` may be one value per leading channel (e.g. probability 1 for background, 0 elsewhere).
    """
    spatial = len(box.start)
    if tuple(array.shape[-spatial:]) != box.shape:
        raise ValueError(f"array shape {array.shape} does not end with the box shape {box.shape}")
    lead = array.shape[:-spatial]
    out = np.empty(lead + box.full_shape, dtype=array.dtype)
    fill_values = np.asarray(fill, dtype=array.dtype)
    out[...] = (
        fill_values.reshape(fill_values.shape + (1,) * spatial) if fill_values.ndim else fill_values
    )
    out[(Ellipsis,) + box.slices] = array
    return out


def crop_image(
    image: sitk.Image,
    region: sitk.Image,
    margin_mm: float | None = None,
    margin: Sequence[int] | int | None = None,
) -> tuple[sitk.Image, CropBox]:
    """Crop ``image`` to the bounding box of ``region`` (nonzero voxels, same grid) plus a margin.

    Give the margin in mm (``margin_mm``, rounded up per axis) or in voxels (``margin``). Returns the
    cropped image (its geometry follows from the crop: same spacing and direction, shifted origin) and
    the box in the image's ``(k, j, i)`` array order, for :func:`paste_image`.
    """
    from SegDeepLib.io.layout import same_grid

    if not same_grid(image, region, tol=1e-4):
        raise SegDeepError("region mask: not on the image's grid; resample it onto the image first")
    spacing_kji = tuple(reversed(image.GetSpacing()))
    if margin_mm is not None and margin is not None:
        raise SegDeepError("crop: give the margin in mm or in voxels, not both")
    voxels = margin_voxels(margin_mm, spacing_kji) if margin_mm is not None else (margin or 0)
    box = region_box(sitk.GetArrayViewFromImage(region) != 0, voxels)
    (k0, j0, i0), (k1, j1, i1) = box.start, box.stop
    return image[i0:i1, j0:j1, k0:k1], box


def paste_image(
    cropped: sitk.Image, box: CropBox, reference: sitk.Image, fill: float = 0
) -> sitk.Image:
    """Exact inverse of :func:`crop_image`: ``cropped`` put back on ``reference``'s grid.

    Voxels outside the box get ``fill``; the pixel type is the cropped image's; the geometry is copied
    from ``reference`` (bit for bit).
    """
    if tuple(reversed(reference.GetSize())) != box.full_shape:
        raise SegDeepError(
            f"paste: reference size {reference.GetSize()} does not match the crop box"
        )
    out = sitk.GetImageFromArray(paste(sitk.GetArrayFromImage(cropped), box, fill))
    out.CopyInformation(reference)
    return out
