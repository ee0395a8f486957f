"""Scaled CRF features of a voxel grid: positions, bilateral features and their chunked source."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from SegDeepLib.crf import lattice


def grid_positions(shape: Sequence[int], spacing: Sequence[float], device) -> torch.Tensor:
    """(N, S) voxel positions in millimetres (float64), C order over ``shape``."""
    out = torch.empty(int(math.prod(shape)), len(shape), dtype=torch.float64, device=device)
    _fill_positions(out, shape, spacing, 1.0)
    return out


def _fill_positions(out: torch.Tensor, shape, spacing, theta: float) -> None:
    """Write position / theta of every voxel into the first len(shape) columns of ``out``."""
    for axis, (n, s) in enumerate(zip(shape, spacing)):
        view = [1] * len(shape)
        view[axis] = n
        coord = torch.arange(n, dtype=torch.float64, device=out.device).mul_(s / theta)
        out[:, axis].view(*shape).copy_(coord.view(view).expand(*shape))


def channel_betas(theta_beta: Sequence[float], channels: int) -> list[float]:
    """One intensity bandwidth per channel (a single value applies to all)."""
    return [float(b) for b in theta_beta] * (channels if len(theta_beta) == 1 else 1)


def bilateral_features(
    image: torch.Tensor, spacing: Sequence[float], theta_alpha: float, theta_beta: Sequence[float]
) -> torch.Tensor:
    """(N, S + C) appearance features of ``image`` (C, *spatial), scaled by the bandwidths."""
    shape, channels = image.shape[1:], image.shape[0]
    out = torch.empty(
        int(math.prod(shape)), len(shape) + channels, dtype=torch.float64, device=image.device
    )
    _fill_positions(out, shape, spacing, theta_alpha)
    betas = channel_betas(theta_beta, channels)
    for c in range(channels):
        out[:, len(shape) + c].copy_(image[c].reshape(-1)).div_(betas[c])
    return out


def grid_feature_source(
    image: torch.Tensor, spacing: Sequence[float], theta_alpha: float, theta_beta: Sequence[float]
) -> lattice.FeatureSource:
    """The rows of :func:`bilateral_features` (same values, bit for bit), made on demand."""
    shape, channels = list(image.shape[1:]), image.shape[0]
    scales = [s / theta_alpha for s in spacing]
    betas = channel_betas(theta_beta, channels)
    flat = image.detach().reshape(channels, -1)
    n = flat.shape[1]

    def rows(sel: slice) -> torch.Tensor:
        ids = torch.arange(sel.start, min(sel.stop, n), device=image.device)
        out = torch.empty(
            ids.numel(), len(shape) + channels, dtype=torch.float64, device=ids.device
        )
        for axis in range(len(shape) - 1, -1, -1):
            torch.mul((ids % shape[axis]).double(), scales[axis], out=out[:, axis])
            ids = ids // shape[axis]
        for c in range(channels):
            out[:, len(shape) + c].copy_(flat[c, sel]).div_(betas[c])
        return out

    lo, hi = torch.aminmax(flat, dim=1)  # NaN propagates
    div = torch.tensor(betas, dtype=torch.float64, device=image.device)
    low = torch.cat([torch.zeros(len(shape), dtype=torch.float64, device=div.device), lo / div])
    top = torch.tensor([(k - 1) * a for k, a in zip(shape, scales)], dtype=torch.float64)
    high = torch.cat([top.to(div.device), hi / div])
    return lattice.FeatureSource(rows, n, low, high)
