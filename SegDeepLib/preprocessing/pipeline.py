"""``preprocess(image, spec) -> Preprocessed`` and its exact way back to the input grid.

Order of operations (each one undone by :meth:`Preprocessed.to_input_grid`):

1. canonical layout (:func:`SegDeepLib.io.to_canonical`: axis permutation and flips only);
2. crop to the region's bounding box plus ``margin_mm`` (C1 body mask, or a caller-given mask);
3. resampling to ``spacing`` on a grid centred on the cropped grid (axis-aligned: no rotation);
4. intensity normalisation (``(C, Z, Y, X)`` float32).

Resampling happens in the canonical voxel frame, so oblique scans are never rotated: the network
grid's axes are the input's voxel axes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from SegDeepLib.core.preprocessing_spec import validate_spec
from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.image import check_finite, require_3d
from SegDeepLib.io.layout import CanonicalLayout, from_canonical, to_canonical
from SegDeepLib.preprocessing.intensity import apply_intensity
from SegDeepLib.preprocessing.regions import (
    CropBox,
    body_mask_array,
    crop,
    margin_voxels,
    paste,
    region_box,
)
from SegDeepLib.preprocessing.resample import (
    centred_grid,
    resample_labels_onehot,
    resample_to_reference,
    same_geometry,
)

GRID_TOLERANCE_MM = 1e-4


def _frame_image(
    array: np.ndarray, spacing_zyx: Sequence[float], start_zyx: Sequence[int]
) -> sitk.Image:
    """Wrap a canonical (Z, Y, X) array as an image in the canonical voxel frame (identity direction)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    image.SetOrigin(tuple(float(a * s) for a, s in zip(reversed(start_zyx), reversed(spacing_zyx))))
    return image


def _with_geometry(array: np.ndarray, grid: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.CopyInformation(grid)
    return image


def _array_spacing(grid: sitk.Image) -> tuple[float, float, float]:
    return tuple(float(s) for s in reversed(grid.GetSpacing()))


def _input_size(layout: CanonicalLayout) -> tuple[int, ...]:
    return tuple(int(s) for s in layout.reference.GetMetaData("segdeep_size").split())


def _check_on_input_grid(image: sitk.Image, layout: CanonicalLayout, name: str) -> None:
    ref = layout.reference
    problems = []
    if tuple(image.GetSize()) != _input_size(layout):
        problems.append(f"size {image.GetSize()} vs {_input_size(layout)}")
    for what, a, b in (
        ("spacing", image.GetSpacing(), ref.GetSpacing()),
        ("origin", image.GetOrigin(), ref.GetOrigin()),
        ("direction", image.GetDirection(), ref.GetDirection()),
    ):
        if not np.allclose(a, b, atol=GRID_TOLERANCE_MM, rtol=0):
            problems.append(
                f"{what} {tuple(round(v, 6) for v in a)} vs {tuple(round(v, 6) for v in b)}"
            )
    if problems:
        raise SegDeepError(
            f"{name}: not on the image's grid ({'; '.join(problems)}); resample it onto the image first"
        )


def _integer_labels(array: np.ndarray, name: str) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        return array.astype(np.uint8) if array.dtype == bool else array
    if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
        raise SegDeepError(
            f"{name}: label values must be whole numbers (found non-integer or NaN values)"
        )
    return array.astype(np.int32)


def _compact_labels(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.size == 0 or (array.min() >= 0 and array.max() <= 255):
        return array.astype(np.uint8)
    return array.astype(np.int32)


@dataclass
class Preprocessed:
    """A preprocessed image: the network array and everything needed to go back.

    ``array``: ``(C, Z, Y, X)`` float32 on the network grid (canonical layout, cropped, resampled).
    ``spacing_zyx``: the network grid spacing (mm). ``region``: the crop region on the network grid
    (bool ``(Z, Y, X)``; the candidate region the cascade's loss is restricted to) or ``None``.
    ``box``: the crop in canonical input voxels. ``spec``: the validated spec.
    """

    array: np.ndarray
    spacing_zyx: tuple[float, float, float]
    spec: dict[str, Any]
    layout: CanonicalLayout
    box: CropBox
    region: np.ndarray | None
    crop_grid: sitk.Image = field(repr=False)
    network_grid: sitk.Image = field(repr=False)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape[1:])

    def _to_crop_grid(self, array: np.ndarray, interpolation: str) -> np.ndarray:
        moved = resample_to_reference(
            _with_geometry(array, self.network_grid), self.crop_grid, interpolation
        )
        return sitk.GetArrayFromImage(moved)

    def to_input_grid(
        self, array: np.ndarray, is_label: bool, fill: float | Sequence[float] | None = None
    ) -> sitk.Image | np.ndarray:
        """Map a network-grid array back onto the input grid (undo resampling, crop, layout).

        - ``is_label=True``: ``array`` is ``(Z, Y, X)`` integer labels -> a ``sitk.Image`` (uint8
          when the values fit, else int32) with the input image's exact geometry; nearest neighbour;
          voxels outside the crop get ``fill`` (default 0).
        - ``is_label=False``: ``array`` is ``(K, Z, Y, X)`` float (probabilities) -> a numpy float32
          array ``(K, k, j, i)`` in the input's ``sitk.GetArrayFromImage`` order (wrap one channel
          with :meth:`image_on_input_grid`); linear interpolation; outside the crop ``fill`` per
          channel (default: 1 for channel 0 = background, 0 for the others).
        """
        array = np.asarray(array)
        if is_label:
            return self._labels_to_input(array, 0 if fill is None else fill)
        return self._probabilities_to_input(array, fill)

    def _labels_to_input(self, array: np.ndarray, fill: float) -> sitk.Image:
        if array.shape != self.shape_zyx:
            raise ValueError(
                f"label array shape {array.shape} != network grid shape {self.shape_zyx}"
            )
        labels = _compact_labels(_integer_labels(array, "label array"))
        back = self._to_crop_grid(labels, "nearest")
        return from_canonical(paste(back, self.box, fill), self.layout)

    def _probabilities_to_input(
        self, array: np.ndarray, fill: float | Sequence[float] | None
    ) -> np.ndarray:
        if array.ndim != 4 or array.shape[1:] != self.shape_zyx:
            raise ValueError(f"probability array shape {array.shape} != (K, {self.shape_zyx})")
        if fill is None:
            fill = [1.0] + [0.0] * (array.shape[0] - 1)
        channels = [self._to_crop_grid(c.astype(np.float32), "linear") for c in array]
        full = paste(np.stack(channels), self.box, fill)
        return np.ascontiguousarray(self.layout.from_array(full))

    def image_on_input_grid(self, array_kji: np.ndarray) -> sitk.Image:
        """Wrap a ``(k, j, i)`` array (one channel of :meth:`to_input_grid`) with the input geometry."""
        array_kji = np.asarray(array_kji)
        if array_kji.dtype == bool:
            array_kji = array_kji.astype(np.uint8)
        image = sitk.GetImageFromArray(np.ascontiguousarray(array_kji))
        if tuple(image.GetSize()) != _input_size(self.layout):
            raise ValueError(f"array shape {array_kji.shape} does not match the input grid")
        ref = self.layout.reference
        image.SetOrigin(ref.GetOrigin())
        image.SetSpacing(ref.GetSpacing())
        image.SetDirection(ref.GetDirection())
        return image


def _region_mask(
    array: np.ndarray, layout: CanonicalLayout, spec: Mapping[str, Any], region: sitk.Image | None
) -> np.ndarray | None:
    if spec["crop"] == "body":
        return body_mask_array(array, spec["body_threshold"]).astype(bool)
    if spec["crop"] == "mask":
        if region is None:
            raise SegDeepError(
                "preprocessing spec: 'crop': 'mask' needs a region mask (region=...)"
            )
        _check_on_input_grid(region, layout, "region mask")
        return layout.to_array(sitk.GetArrayViewFromImage(region)) > 0
    return None


def _resample(image: sitk.Image, spec: Mapping[str, Any]) -> tuple[sitk.Image, sitk.Image]:
    """Return (network grid image, network grid reference)."""
    if spec["spacing"] is None:
        return image, image
    grid = centred_grid(image, list(reversed(spec["spacing"])))
    return resample_to_reference(image, grid, spec["interpolation"]), grid


def _intensity_mask(
    spec: Mapping[str, Any], voxels: np.ndarray, region: np.ndarray | None
) -> np.ndarray | None:
    mask = spec["intensity"].get("mask")
    if mask == "nonzero":
        return voxels != 0
    if mask == "region":
        return region
    return None


def preprocess(
    image: sitk.Image, spec: Mapping[str, Any] | None, region: sitk.Image | None = None
) -> Preprocessed:
    """Turn an input image into the network array described by ``spec`` (see :mod:`.spec`).

    ``region`` (a mask on the image's grid, e.g. C2 from :func:`dilate_foreground`) is needed when the
    spec says ``"crop": "mask"``. Raises :class:`SegDeepError` for a bad spec, a non-3D image, NaN/Inf
    voxels or an empty crop region.
    """
    spec = validate_spec(spec)
    image = require_3d(image)
    check_finite(image)
    array, layout = to_canonical(image, dtype=np.float32)
    full_region = _region_mask(array, layout, spec, region)
    box = CropBox.full(array.shape)
    if full_region is not None:
        box = region_box(full_region, margin_voxels(spec["margin_mm"], layout.spacing_zyx))
    crop_image = _frame_image(crop(array, box), layout.spacing_zyx, box.start)
    resampled, grid = _resample(crop_image, spec)
    voxels = sitk.GetArrayFromImage(resampled)
    net_region = None
    if full_region is not None:
        cropped_region = _frame_image(
            crop(full_region.astype(np.uint8), box), layout.spacing_zyx, box.start
        )
        net_region = sitk.GetArrayFromImage(
            resample_to_reference(cropped_region, grid, "nearest")
        ).astype(bool)
    channels = apply_intensity(voxels, spec["intensity"], _intensity_mask(spec, voxels, net_region))
    return Preprocessed(
        array=np.ascontiguousarray(channels, dtype=np.float32),
        spacing_zyx=_array_spacing(grid),
        spec=spec,
        layout=layout,
        box=box,
        region=net_region,
        crop_grid=_geometry_only(crop_image),
        network_grid=_geometry_only(grid),
    )


def _geometry_only(image: sitk.Image) -> sitk.Image:
    """A uint8 image with the same grid (keeps the reference light: 1 byte per voxel)."""
    grid = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    grid.CopyInformation(image)
    return grid


def preprocess_label(
    label_image: sitk.Image, pre: Preprocessed, interpolation: str | None = None
) -> np.ndarray:
    """Put a label map on ``pre``'s network grid: ``(Z, Y, X)`` integer array.

    The label map must lie on the preprocessed image's grid (else :class:`SegDeepError`).
    ``interpolation`` (default: the spec's ``label_interpolation``) is ``"nearest"`` or
    ``"onehot_linear"``. Integer dtypes are kept; float maps with whole values become int32.
    """
    label_image = require_3d(label_image, "label map")
    _check_on_input_grid(label_image, pre.layout, "label map")
    method = interpolation or pre.spec["label_interpolation"]
    if method not in ("nearest", "onehot_linear"):
        raise SegDeepError(f"label interpolation '{method}': use 'nearest' or 'onehot_linear'")
    array, _ = to_canonical(label_image, dtype=None)
    labels = _frame_image(
        _integer_labels(crop(array, pre.box), "label map"), pre.layout.spacing_zyx, pre.box.start
    )
    if method == "onehot_linear" and not same_geometry(labels, pre.network_grid):
        values = np.unique(sitk.GetArrayViewFromImage(labels))
        moved = resample_labels_onehot(labels, pre.network_grid, values)
    else:
        moved = resample_to_reference(labels, pre.network_grid, "nearest")
    return sitk.GetArrayFromImage(moved)
