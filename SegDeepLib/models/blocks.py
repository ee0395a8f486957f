"""Small building blocks and helpers shared by the networks (any spatial dimension)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from SegDeepLib.errors import SegDeepError

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}


def conv(dims: int, cin: int, cout: int, kernel: int, padding: int = 0, bias: bool = True):
    """A ``dims``-D convolution (stride 1)."""
    return _CONV[dims](cin, cout, kernel, padding=padding, bias=bias)


def batch_norm(dims: int, channels: int) -> nn.Module:
    return _BN[dims](channels)


def max_pool(dims: int) -> nn.Module:
    """2x2(x2) max-pooling with stride 2."""
    return _POOL[dims](2)


def up_conv(dims: int, cin: int, cout: int, bias: bool = True) -> nn.Module:
    """2x2(x2) transposed convolution with stride 2 (doubles every spatial size)."""
    return _CONV_T[dims](cin, cout, 2, stride=2, bias=bias)


def down_conv(dims: int, cin: int, cout: int, bias: bool = True) -> nn.Module:
    """2x2(x2) convolution with stride 2 (halves every spatial size)."""
    return _CONV[dims](cin, cout, 2, stride=2, bias=bias)


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the spatial axes of ``x`` ``(N, C, *spatial)`` to ``size``, centred."""
    slices = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], size):
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return x[tuple(slices)]


def check_input(x: torch.Tensor, in_channels: int, dims: int, network: str) -> None:
    """Raise a :class:`SegDeepError` unless ``x`` is ``(N, in_channels, *spatial)`` of ``dims``."""
    if x.ndim != dims + 2 or x.shape[1] != in_channels:
        axes = "Z, Y, X" if dims == 3 else "H, W"
        raise SegDeepError(
            f"{network}: input shape {tuple(x.shape)} is not (N, {in_channels}, {axes}); "
            f"give a batch of {dims}D images with {in_channels} channel(s)"
        )


def as_size(size: Sequence[int] | int, dims: int, network: str) -> tuple[int, ...]:
    """A spatial size as a tuple of ``dims`` positive ints."""
    if isinstance(size, int):
        size = (size,) * dims
    size = tuple(int(s) for s in size)
    if len(size) != dims or any(s < 1 for s in size):
        raise SegDeepError(f"{network}: size {size} must be {dims} positive integers")
    return size


def round_up(size: Sequence[int], multiple: int) -> tuple[int, ...]:
    """Each entry rounded up to a multiple of ``multiple``."""
    return tuple(-(-int(s) // multiple) * multiple for s in size)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
