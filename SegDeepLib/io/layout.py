"""The one place where images become network arrays and back.

Network layout: a numpy array ``(Z, Y, X)`` (add channels in front: ``(C, Z, Y, X)``) in a
*canonical orientation*: the voxel axes are permuted and flipped (never resampled) so that array
axis 2 runs toward patient Left, axis 1 toward Posterior and axis 0 toward Superior (LPS, the
nearest axis for oblique scans). Spacing is reported in the same (Z, Y, X) order.

``from_canonical(to_canonical(img)...)`` restores the exact voxels and geometry (a permutation and
flips are exact inverses), so outputs lie on the input grid bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class CanonicalLayout:
    """How an image's ``sitk.GetArrayFromImage`` (k, j, i) array maps to canonical (Z, Y, X)."""

    permutation: tuple[int, int, int]  # canonical axis a takes array axis permutation[a]
    flips: tuple[bool, bool, bool]  # flip canonical axis a after permuting
    spacing_zyx: tuple[float, float, float]
    reference: sitk.Image  # geometry holder (no need to keep voxels alive: a 1-voxel copy suffices)

    def to_array(self, array: np.ndarray) -> np.ndarray:
        """(..., k, j, i) image-order array -> (..., Z, Y, X) canonical view."""
        lead = array.ndim - 3
        out = np.transpose(array, tuple(range(lead)) + tuple(lead + p for p in self.permutation))
        for axis, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis=lead + axis)
        return out

    def from_array(self, array: np.ndarray) -> np.ndarray:
        """Exact inverse of :meth:`to_array`."""
        lead = array.ndim - 3
        out = array
        for axis, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis=lead + axis)
        inverse = np.argsort(self.permutation)
        return np.transpose(out, tuple(range(lead)) + tuple(lead + int(p) for p in inverse))


def _layout(image: sitk.Image) -> CanonicalLayout:
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)  # columns = i, j, k axes
    # world axis w (0=L,1=P,2=S) nearest to each voxel axis; resolve ties greedily by magnitude
    order = np.argsort(-np.abs(direction).max(axis=0))
    world_of_voxel = [-1, -1, -1]
    used: set[int] = set()
    for voxel_axis in order:
        candidates = np.argsort(-np.abs(direction[:, voxel_axis]))
        world = next(int(w) for w in candidates if int(w) not in used)
        used.add(world)
        world_of_voxel[int(voxel_axis)] = world
    # array axes are (k, j, i) = voxel axes (2, 1, 0); canonical axes are world (S, P, L) = (2, 1, 0)
    permutation = []
    flips = []
    spacing = image.GetSpacing()
    spacing_zyx = []
    for world in (2, 1, 0):
        voxel_axis = world_of_voxel.index(world)
        permutation.append(2 - voxel_axis)
        flips.append(bool(direction[world, voxel_axis] < 0))
        spacing_zyx.append(float(spacing[voxel_axis]))
    return CanonicalLayout(tuple(permutation), tuple(flips), tuple(spacing_zyx), _geometry_copy(image))


def _geometry_copy(image: sitk.Image) -> sitk.Image:
    """A tiny image holding the full grid description (size kept as metadata)."""
    holder = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    holder.SetOrigin(image.GetOrigin())
    holder.SetSpacing(image.GetSpacing())
    holder.SetDirection(image.GetDirection())
    holder.SetMetaData("segdeep_size", " ".join(str(s) for s in image.GetSize()))
    return holder


def to_canonical(image: sitk.Image, dtype: np.dtype | type | None = np.float32) -> tuple[np.ndarray, CanonicalLayout]:
    """Return the image's voxels as a contiguous canonical ``(Z, Y, X)`` array and the layout."""
    layout = _layout(image)
    view = layout.to_array(sitk.GetArrayViewFromImage(image))
    # always a copy: a view would point into the image's buffer and dangle once the image is freed
    array = np.array(view, dtype=dtype if dtype is not None else view.dtype, order="C", copy=True)
    return array, layout


def from_canonical(array: np.ndarray, layout: CanonicalLayout) -> sitk.Image:
    """Put a canonical ``(Z, Y, X)`` array back on the original grid (exact geometry)."""
    voxels = np.ascontiguousarray(layout.from_array(array))
    size = tuple(int(s) for s in layout.reference.GetMetaData("segdeep_size").split())
    if voxels.shape[::-1] != size:
        raise ValueError(f"array shape {array.shape} does not match the grid size {size}")
    image = sitk.GetImageFromArray(voxels)
    image.SetOrigin(layout.reference.GetOrigin())
    image.SetSpacing(layout.reference.GetSpacing())
    image.SetDirection(layout.reference.GetDirection())
    return image


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-6) -> bool:
    """True when two images share size, spacing, origin and direction (to ``tol``)."""
    if a.GetSize() != b.GetSize():
        return False
    pairs = ((a.GetSpacing(), b.GetSpacing()), (a.GetOrigin(), b.GetOrigin()), (a.GetDirection(), b.GetDirection()))
    return all(np.allclose(x, y, atol=tol, rtol=0) for x, y in pairs)
