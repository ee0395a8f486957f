"""Row-normalised Gaussian smoothness kernel, computed separably (exact up to 6-sigma truncation).

Blurring the constant 1 with a zero-padded separable kernel gives a product of per-axis sums, so
the row-normalised 3D (or 2D) filter is the product of row-normalised 1D filters. Each 1D filter
is stored as a band ``(n, 2R+1)``: ``out[i] = sum_t band[i, t] * x[i + t - R]``. The adjoint uses
the transposed band, so forward and backward are exact transposes of each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

TRUNCATE = 6.0


def gaussian_band(n: int, sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Row-normalised Gaussian band (n, 2R+1) for ``sigma`` in voxels (R = ceil(6 sigma))."""
    radius = max(0, min(n - 1, math.ceil(TRUNCATE * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2) if sigma > 0 else (taps == 0).double()
    pos = torch.arange(n)[:, None] + taps.long()[None]
    band = torch.where((pos >= 0) & (pos < n), kernel[None], torch.zeros(()).double())
    return (band / band.sum(1, keepdim=True)).to(dtype)


def transpose_band(band: torch.Tensor) -> torch.Tensor:
    """Band of the transposed 1D operator: ``bt[j, t] = band[j + t - R, 2R - t]``."""
    n, width = band.shape
    radius = (width - 1) // 2
    padded = torch.nn.functional.pad(band, (0, 0, radius, radius))
    rows = torch.arange(n)[:, None] + torch.arange(width)[None]
    cols = (width - 1 - torch.arange(width))[None].expand(n, width)
    return padded[rows, cols]


def band_matrix(band: torch.Tensor) -> torch.Tensor:
    """Dense (n, n) matrix of a band."""
    n, width = band.shape
    radius = (width - 1) // 2
    dense = torch.zeros(n, n + 2 * radius, dtype=band.dtype, device=band.device)
    rows = torch.arange(n)[:, None]
    cols = rows + torch.arange(width)[None]
    dense[rows, cols] = band
    return dense[:, radius : radius + n]


def smoothness_bands(
    shape: Sequence[int], theta_mm: float, spacing: Sequence[float], dtype: torch.dtype
) -> list[torch.Tensor]:
    """One band per spatial axis for bandwidth ``theta_mm`` and voxel ``spacing`` (mm)."""
    return [gaussian_band(n, theta_mm / s, dtype) for n, s in zip(shape, spacing)]


def separable_filter_torch(values: torch.Tensor, matrices: Sequence[torch.Tensor]) -> torch.Tensor:
    """Apply one dense matrix per spatial axis to ``values`` (C, *spatial)."""
    out = values
    for axis, mat in enumerate(matrices):
        moved = out.movedim(axis + 1, -1)
        out = (moved @ mat.t().to(values)).movedim(-1, axis + 1)
    return out
