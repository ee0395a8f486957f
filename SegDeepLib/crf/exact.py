"""Exact (brute-force, O(N^2 d)) row-normalised Gaussian filtering: the test reference."""

from __future__ import annotations

import torch

from SegDeepLib.errors import SegDeepError

MAX_EXACT_POINTS = 65536


def gaussian_rows(features: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of the kernel matrix exp(-|f_i - f_j|^2 / 2) of ``features`` (N, d)."""
    block = features[start:stop]
    sq = (features * features).sum(1)
    dist2 = sq[start:stop, None] + sq[None, :] - 2.0 * (block @ features.t())
    return torch.exp(-0.5 * dist2.clamp_min(0))


def exact_filter(
    features: torch.Tensor,
    values: torch.Tensor,
    scale: torch.Tensor | None = None,
    block: int = 512,
) -> torch.Tensor:
    """``K @ (values * scale)`` for values (C, N); K is symmetric, so this is its own adjoint."""
    n = features.shape[0]
    if n > MAX_EXACT_POINTS:
        raise SegDeepError(
            f"CRF exact backend: {n} voxels is too many for O(N^2) filtering "
            f"(limit {MAX_EXACT_POINTS}); use backend='auto'"
        )
    feats = features.to(values.dtype)
    vals = values if scale is None else values * scale
    out = torch.empty_like(values)
    for start in range(0, n, block):
        stop = min(n, start + block)
        out[:, start:stop] = vals @ gaussian_rows(feats, start, stop).t()
    return out
