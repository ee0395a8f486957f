"""Surface-distance metrics of one class, in millimetres: ASD, MSD (Hausdorff), HD95, NSD, AVD.

Definitions (``P`` = prediction mask, ``R`` = reference mask, both on one voxel grid):

* **Surface** ``S(M)``: the voxels of ``M`` with at least one face neighbour (6-neighbourhood in
  3D, 4 in 2D) outside ``M``. Voxels beyond the array edge count as outside, so an object touching
  the image border has a surface there (as in MONAI's ``get_mask_edges``).
* **Distance** between two voxels: the Euclidean distance between their centres in physical units,
  ``sqrt(sum_k (di_k * spacing_k)^2)``. The direction matrix is orthonormal, so an oblique or flipped
  grid gives the same distances; anisotropic spacing is taken into account. ``d(x, Y)`` is the
  distance from voxel ``x`` to the nearest voxel of set ``Y`` (exact Euclidean distance transform,
  SimpleITK's Maurer filter with image spacing).
* ``D_PR = {d(x, S(R)) : x in S(P)}`` and ``D_RP = {d(y, S(P)) : y in S(R)}``.
* **ASD** (average symmetric surface distance) = ``(sum D_PR + sum D_RP) / (|S(P)| + |S(R)|)``.
* **MSD** (maximum symmetric surface distance, Hausdorff) = ``max(max D_PR, max D_RP)``.
* **HD95** = ``max(percentile95(D_PR), percentile95(D_RP))`` (MONAI's definition, numpy's linear
  percentile).
* **NSD** (normalised surface Dice at tolerance ``tau`` mm) =
  ``(|{D_PR <= tau}| + |{D_RP <= tau}|) / (|S(P)| + |S(R)|)`` (MONAI's voxel-count form).
* **AVD** (averaged Hausdorff distance, Taha & Hanbury 2015) = ``max(mean_{x in P} d(x, R),
  mean_{y in R} d(y, P))`` over *all* voxels of the masks (voxels inside the other mask count 0).

Empty masks: both empty -> every distance 0 and NSD 1; exactly one empty -> every distance ``inf``
and NSD 0 (MONAI reports ``inf`` for a missing surface too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

DISTANCE_METRICS = ("asd", "msd", "hd95", "nsd", "avd")


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a boolean mask: inside, with a face neighbour outside (or off the array)."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded.copy()
    for axis in range(mask.ndim):
        for shift in (1, -1):
            interior &= np.roll(padded, shift, axis=axis)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    return mask & ~interior[inner]


def distance_to_set(target: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Exact Euclidean distance (mm) from every voxel to the nearest ``True`` voxel of ``target``.

    ``spacing`` is given in array axis order. Voxels of ``target`` get 0. ``target`` must not be
    empty.
    """
    target = np.asarray(target, dtype=bool)
    if not target.any():
        raise ValueError("distance to an empty set is undefined")
    image = sitk.GetImageFromArray(target.astype(np.uint8))
    image.SetSpacing([float(s) for s in reversed(tuple(spacing))])
    signed = sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    distance = np.abs(sitk.GetArrayFromImage(signed)).astype(np.float64)
    # Maurer measures to the contour of ``target``; the nearest voxel of a set to an outside voxel
    # always lies on that contour, so only the inside needs setting to 0.
    distance[target] = 0.0
    return distance


def crop_to_union(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union, padded by one empty voxel per side.

    All distances between the masks (and their surfaces) are unchanged by the crop: every voxel of
    either mask and every nearest neighbour lies inside the box, and the padding keeps the surface
    definition at the array edge.
    """
    union = np.asarray(pred, dtype=bool) | np.asarray(ref, dtype=bool)
    coords = np.nonzero(union)
    if not coords[0].size:
        return pred, ref
    box = tuple(slice(int(c.min()), int(c.max()) + 1) for c in coords)
    return np.pad(pred[box], 1), np.pad(ref[box], 1)


def directed_distances(
    source: np.ndarray, target: np.ndarray, spacing: Sequence[float]
) -> np.ndarray:
    """Distances (mm) from each ``True`` voxel of ``source`` to the nearest one of ``target``."""
    return distance_to_set(target, spacing)[np.asarray(source, dtype=bool)]


def _empty_policy(pred_empty: bool, ref_empty: bool) -> dict[str, float] | None:
    if pred_empty and ref_empty:
        return {"asd": 0.0, "msd": 0.0, "hd95": 0.0, "nsd": 1.0, "avd": 0.0}
    if pred_empty or ref_empty:
        return {"asd": math.inf, "msd": math.inf, "hd95": math.inf, "nsd": 0.0, "avd": math.inf}
    return None


def distance_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 2.0
) -> dict[str, float]:
    """ASD, MSD, HD95, NSD (at ``tolerance_mm``) and AVD between two boolean masks (mm).

    ``spacing`` is the voxel size in array axis order (for a SimpleITK array: reversed
    ``GetSpacing()``).
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape or len(spacing) != pred.ndim:
        raise ValueError(f"shapes {pred.shape}, {ref.shape} and spacing {tuple(spacing)} disagree")
    policy = _empty_policy(not pred.any(), not ref.any())
    if policy is not None:
        return policy
    pred, ref = crop_to_union(pred, ref)
    surf_pred, surf_ref = surface_mask(pred), surface_mask(ref)
    to_surf_pred = distance_to_set(surf_pred, spacing)
    to_surf_ref = distance_to_set(surf_ref, spacing)
    d_pr, d_rp = to_surf_ref[surf_pred], to_surf_pred[surf_ref]
    both = np.concatenate([d_pr, d_rp])
    # The nearest voxel of a mask to a voxel outside it lies on the mask's surface, so the voxel-set
    # distances of AVD come from the same maps (0 inside the other mask).
    avd = max(np.where(ref, 0.0, to_surf_ref)[pred].mean(), np.where(pred, 0.0, to_surf_pred)[ref].mean())
    return {
        "asd": float(both.mean()),
        "msd": float(both.max()),
        "hd95": float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))),
        # relative slack of 1e-6: distances come from float32 maps, so an exact tie stays a tie
        "nsd": float(np.count_nonzero(both <= tolerance_mm * (1 + 1e-6)) / both.size),
        "avd": float(avd),
    }
