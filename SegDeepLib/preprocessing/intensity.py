"""Intensity normalisation: CT windows, nnU-Net's CT scheme, MR z-score, the dual-channel input.

All functions take numpy arrays in Hounsfield units (CT) or raw MR values and return float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Union

import numpy as np
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError

ArrayOrImage = Union[np.ndarray, sitk.Image]


def _check_window(lo: float, hi: float, what: str = "window") -> None:
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise SegDeepError(f"{what} [{lo}, {hi}]: need two finite values with lo < hi")


def window_rescale(array: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip to ``[lo, hi]`` and map linearly to ``[0, 1]`` (``lo -> 0``, ``hi -> 1``)."""
    _check_window(lo, hi)
    out = (np.clip(np.asarray(array, dtype=np.float64), lo, hi) - lo) / (hi - lo)
    return out.astype(np.float32)


def ct_nnunet_normalize(
    array: np.ndarray, clip: tuple[float, float], mean: float, std: float
) -> np.ndarray:
    """nnU-Net's CT normalisation: clip to the dataset's foreground percentiles, then ``(x - mean) / std``.

    ``clip``, ``mean`` and ``std`` come from :func:`ct_fingerprint` over the training set.
    """
    _check_window(clip[0], clip[1], "ct_nnunet clip")
    if not (np.isfinite(mean) and np.isfinite(std)):
        raise SegDeepError(f"ct_nnunet mean {mean} / std {std}: need finite values")
    clipped = np.clip(np.asarray(array, dtype=np.float64), clip[0], clip[1])
    return ((clipped - mean) / max(float(std), 1e-8)).astype(np.float32)


def _as_array(value: ArrayOrImage) -> np.ndarray:
    return sitk.GetArrayViewFromImage(value) if isinstance(value, sitk.Image) else np.asarray(value)


def _foreground_values(image: ArrayOrImage, label: ArrayOrImage, case: int) -> np.ndarray:
    if isinstance(image, sitk.Image) and isinstance(label, sitk.Image):
        from SegDeepLib.io.layout import same_grid

        if not same_grid(image, label):
            raise SegDeepError(
                f"case {case}: label map is not on the image's grid; resample it first"
            )
    voxels, labels = _as_array(image), _as_array(label)
    if voxels.shape != labels.shape:
        raise SegDeepError(
            f"case {case}: image shape {voxels.shape} differs from label shape {labels.shape}"
        )
    return voxels[labels > 0].astype(np.float64)


def ct_fingerprint(
    pairs: Iterable[tuple[ArrayOrImage, ArrayOrImage]],
    max_voxels_per_case: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Dataset statistics for :func:`ct_nnunet_normalize` from ``(image, label)`` pairs.

    Collects the intensities of all foreground voxels (label > 0) of every case (optionally a random
    subset of ``max_voxels_per_case`` per case, as nnU-Net does with 10,000) and returns the intensity
    spec ``{"kind": "ct_nnunet", "clip": [p0.5, p99.5], "mean": m, "std": s}`` where the percentiles,
    mean and standard deviation are taken over the pooled (unclipped) foreground voxels.
    """
    rng = np.random.default_rng(seed)
    pooled = []
    for case, (image, label) in enumerate(pairs):
        values = _foreground_values(image, label, case)
        if max_voxels_per_case is not None and values.size > max_voxels_per_case:
            values = rng.choice(values, size=max_voxels_per_case, replace=False)
        pooled.append(values)
    values = np.concatenate(pooled) if pooled else np.empty(0)
    if values.size == 0:
        raise SegDeepError(
            "ct fingerprint: no foreground voxels in the given cases; check the label maps"
        )
    lo, hi = np.percentile(values, [0.5, 99.5])
    return {
        "kind": "ct_nnunet",
        "clip": [float(lo), float(hi)],
        "mean": float(values.mean()),
        "std": float(values.std()),
    }


def zscore(array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-image z-score ``(x - mean) / std``, the statistics taken inside ``mask`` when given."""
    values = np.asarray(array, dtype=np.float64)
    inside = values if mask is None else values[np.asarray(mask, dtype=bool)]
    if inside.size == 0:
        raise SegDeepError("z-score: the normalisation mask is empty")
    return ((values - inside.mean()) / max(float(inside.std()), 1e-8)).astype(np.float32)


def density_map(array: np.ndarray, level: float = 6.0, width: float = 20.0) -> np.ndarray:
    """The bladder paper's enhanced density map ``D = exp(-((I - level) / width)^2)`` (HU).

    ``D`` lies in ``(0, 1]`` by construction (1 where ``I == level``), so it needs no rescaling; it is
    not min-max normalised per image, to keep it comparable between images.
    """
    if not (np.isfinite(level) and np.isfinite(width) and width > 0):
        raise SegDeepError(
            f"density map level {level} / width {width}: need finite values and width > 0"
        )
    z = (np.asarray(array, dtype=np.float64) - level) / width
    return np.exp(-(z * z)).astype(np.float32)


def dual_channel(
    array: np.ndarray,
    level: float = 6.0,
    width: float = 20.0,
    window: tuple[float, float] = (-1000.0, 1000.0),
) -> np.ndarray:
    """The bladder paper's two-channel input ``(2, ...)``: the CT windowed to [0, 1] and ``D``."""
    return np.stack([window_rescale(array, window[0], window[1]), density_map(array, level, width)])


def apply_intensity(
    array: np.ndarray, intensity: Mapping[str, Any], mask: np.ndarray | None = None
) -> np.ndarray:
    """Apply a validated intensity spec to a ``(Z, Y, X)`` array; returns ``(C, Z, Y, X)`` float32.

    ``mask`` (bool, same shape) restricts the z-score statistics (the pipeline passes the mask the
    spec's ``"mask"`` entry names); the other kinds ignore it.
    """
    kind = intensity["kind"]
    if kind == "window":
        out = window_rescale(array, *intensity["window"])
    elif kind == "ct_nnunet":
        out = ct_nnunet_normalize(array, intensity["clip"], intensity["mean"], intensity["std"])
    elif kind == "zscore":
        out = zscore(array, mask)
    elif kind == "dual_channel":
        return dual_channel(array, intensity["level"], intensity["width"], intensity["window"])
    elif kind == "none":
        out = np.asarray(array, dtype=np.float32)
    else:  # validate_spec refuses unknown kinds before we get here
        raise SegDeepError(f"intensity kind '{kind}': unknown")
    return out[None]
