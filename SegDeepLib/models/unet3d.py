"""3D U-Net (Çiçek et al. 2016) with same-size or valid convolutions.

Paper settings (``width=32, depth=3``): four resolution levels; analysis level l has two 3x3x3
convolutions with ``32 * 2**l`` then ``64 * 2**l`` channels (32/64, 64/128, 128/256, 256/512),
each followed by BatchNorm + ReLU, and 2x2x2 max-pooling in between; the synthesis path applies a
2x2x2 stride-2 up-convolution (keeping the channels), concatenates the same-level analysis
features and applies two 3x3x3 conv + BN + ReLU with ``64 * 2**l`` channels; a 1x1x1 convolution
gives the class logits. About 19M parameters.

- ``padding="same"`` (tutorial paper, Roth et al. 2018): zero-padded convolutions, output size =
  input size, every side a multiple of ``2**depth``.
- ``padding="valid"`` (cascade paper, Roth et al. 2018): unpadded convolutions and centre-cropped
  skip connections; input 132x132x116 gives output 44x44x28 (the centre of the input).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from SegDeepLib.errors import SegDeepError
from SegDeepLib.models import blocks
from SegDeepLib.models.registry import register_model

_MAX_SEARCH = 4096  # largest side valid_input_size searches up to


class DoubleConv(nn.Sequential):
    """Two 3x3x3 convolutions, each followed by (BatchNorm +) ReLU."""

    def __init__(self, cin: int, mid: int, cout: int, padding: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for a, b in ((cin, mid), (mid, cout)):
            layers.append(blocks.conv(3, a, b, 3, padding, bias=not batch_norm))
            if batch_norm:
                layers.append(blocks.batch_norm(3, b))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


@register_model("unet3d")
class UNet3D(nn.Module):
    """3D U-Net; logits ``(N, num_classes, *output_size(input_size))``.

    Args:
        in_channels: input channels.
        num_classes: K >= 2 (background included).
        width: channels of the first convolution (paper 32).
        depth: number of max-pooling steps (paper 3, i.e. 4 resolution levels).
        padding: ``"same"`` or ``"valid"``.
        batch_norm: BatchNorm after every convolution (both papers use it).
    """

    spatial_dims = 3

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        width: int = 32,
        depth: int = 3,
        padding: str = "same",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        _check_config(in_channels, num_classes, width, depth, padding)
        self.in_channels, self.num_classes, self.depth = in_channels, num_classes, depth
        self.padding = padding
        pad, bn = (1 if padding == "same" else 0), bool(batch_norm)
        out = [2 * width * 2**level for level in range(depth + 1)]  # 64, 128, 256, 512
        ins = [in_channels] + out[:-1]
        self.encoders = nn.ModuleList(
            DoubleConv(ins[i], out[i] // 2, out[i], pad, bn) for i in range(depth + 1)
        )
        self.pool = blocks.max_pool(3)
        levels = range(depth - 1, -1, -1)
        self.ups = nn.ModuleList(blocks.up_conv(3, out[i + 1], out[i + 1]) for i in levels)
        self.decoders = nn.ModuleList(
            DoubleConv(out[i + 1] + out[i], out[i], out[i], pad, bn) for i in levels
        )
        self.head = blocks.conv(3, out[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks.check_input(x, self.in_channels, 3, "unet3d")
        self.output_size(tuple(x.shape[2:]))  # raises on a size the network cannot take
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x if i == 0 else self.pool(skips[-1]))
            skips.append(x)
        skips.pop()
        for up, decoder in zip(self.ups, self.decoders):
            x = up(x)
            skip = blocks.center_crop(skips.pop(), x.shape[2:])
            x = decoder(torch.cat([skip, x], dim=1))
        return self.head(x)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Output size for ``input_size``; a :class:`SegDeepError` if the network rejects it."""
        size = blocks.as_size(input_size, 3, "unet3d")
        result = tuple(self._side(s) for s in size)
        if None in result:
            raise SegDeepError(
                f"unet3d ({self.padding}): input size {size} is not accepted; use "
                f"valid_input_size(), e.g. {self.valid_input_size(size)}"
            )
        return result  # type: ignore[return-value]

    def valid_input_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """Smallest accepted size >= ``size`` on every side."""
        size = blocks.as_size(size, 3, "unet3d")
        if self.padding == "same":
            return blocks.round_up(size, 2**self.depth)
        return tuple(self._next_valid(s) for s in size)

    def _side(self, s: int) -> int | None:
        """Output length of one side of length ``s``, or None when it is not accepted."""
        if self.padding == "same":
            return s if s % 2**self.depth == 0 else None
        for _ in range(self.depth):  # analysis: two valid convs (-4), then pool (/2, even only)
            s -= 4
            if s < 2 or s % 2:
                return None
            s //= 2
        s -= 4  # bottom
        for _ in range(self.depth):  # synthesis: up-conv (x2), two valid convs (-4)
            s = 2 * s - 4
            if s < 1:
                return None
        return s if s >= 1 else None

    def _next_valid(self, s: int) -> int:
        for candidate in range(s, _MAX_SEARCH + 1):
            if self._side(candidate) is not None:
                return candidate
        raise SegDeepError(f"unet3d (valid): no accepted size >= {s} up to {_MAX_SEARCH}")


def _check_config(in_channels, num_classes, width, depth, padding) -> None:
    if in_channels < 1 or num_classes < 2 or width < 1 or depth < 1:
        raise SegDeepError(
            "unet3d: need in_channels >= 1, num_classes >= 2, width >= 1, depth >= 1 "
            f"(got {in_channels}, {num_classes}, {width}, {depth})"
        )
    if padding not in ("same", "valid"):
        raise SegDeepError(f"unet3d: padding must be 'same' or 'valid', not {padding!r}")
