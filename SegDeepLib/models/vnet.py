"""V-Net (Milletari, Navab, Ahmadi 2016), optionally with batch normalisation (Xu et al. 2018).

Architecture (paper settings ``width=16, depth=4``): five resolution levels with 16, 32, 64, 128,
256 channels; every stage is residual (its input is added to the output of its last 5x5x5
convolution) and has ``min(level + 1, 3)`` convolutions (1, 2, 3, 3 down, 3 at the bottom, 3, 3,
2, 1 up); 2x2x2 stride-2 convolutions halve the resolution and double the channels; 2x2x2
stride-2 transposed convolutions go back up to half the channels, whose output is concatenated
with the same-level features of the left part; PReLU non-linearities everywhere; a final 1x1x1
convolution gives the class logits. The first stage's residual adds the input repeated along the
channel axis (Milletari's "input replicated 16 times"; any ``in_channels`` works).

``batch_norm=True`` puts a BatchNorm after every convolution (the bladder paper's CNN).
Padded ("same") convolutions: output size = input size; every input side must be a multiple of
``2**depth``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from SegDeepLib.errors import SegDeepError
from SegDeepLib.models import blocks
from SegDeepLib.models.registry import register_model


def _conv_unit(cin: int, cout: int, kernel: int, batch_norm: bool) -> list[nn.Module]:
    """Convolution (+ BatchNorm), no activation."""
    padding = kernel // 2
    layers: list[nn.Module] = [blocks.conv(3, cin, cout, kernel, padding, bias=not batch_norm)]
    if batch_norm:
        layers.append(blocks.batch_norm(3, cout))
    return layers


class ResidualStage(nn.Module):
    """``n`` 5x5x5 convolutions with PReLU; the stage input is added before the last PReLU."""

    def __init__(self, channels: int, num_convs: int, kernel: int, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += _conv_unit(channels, channels, kernel, batch_norm)
            if i < num_convs - 1:
                layers.append(nn.PReLU(channels))
        self.convs = nn.Sequential(*layers)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.act(self.convs(x) + (x if residual is None else residual))


class InputStage(nn.Module):
    """First stage: in_channels -> width, residual = the input repeated along channels."""

    def __init__(self, in_channels: int, width: int, kernel: int, batch_norm: bool) -> None:
        super().__init__()
        self.width = width
        self.lift = nn.Sequential(*_conv_unit(in_channels, width, kernel, batch_norm))
        self.act = nn.PReLU(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        repeats = -(-self.width // x.shape[1])
        residual = x.repeat(1, repeats, 1, 1, 1)[:, : self.width]
        return self.act(self.lift(x) + residual)


def _resample(kind: str, cin: int, cout: int, batch_norm: bool) -> nn.Sequential:
    """Strided 2x2x2 down-convolution or transposed up-convolution (+ BN) + PReLU."""
    make = blocks.down_conv if kind == "down" else blocks.up_conv
    layers: list[nn.Module] = [make(3, cin, cout, bias=not batch_norm)]
    if batch_norm:
        layers.append(blocks.batch_norm(3, cout))
    layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


@register_model("vnet")
class VNet(nn.Module):
    """V-Net with optional BatchNorm; logits ``(N, num_classes, Z, Y, X)``.

    Args:
        in_channels: input channels (1 for CT, 2 for the dual-channel input).
        num_classes: K >= 2 (background included).
        width: channels of the first level (paper 16); level l has ``width * 2**l``.
        depth: number of down-sampling steps (paper 4).
        batch_norm: BatchNorm after every convolution (bladder paper).
        kernel_size: convolution size (paper 5).
        max_convs: most convolutions in a stage (paper 3).
        init_std: if given, convolution weights ~ N(0, init_std) and zero biases (the bladder
            paper uses 0.01); otherwise PyTorch's default initialisation.
    """

    spatial_dims = 3

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        width: int = 16,
        depth: int = 4,
        batch_norm: bool = False,
        kernel_size: int = 5,
        max_convs: int = 3,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        _check_config(in_channels, num_classes, width, depth, kernel_size, max_convs)
        if init_std is not None and init_std <= 0:
            raise SegDeepError(f"vnet: init_std must be > 0, not {init_std}")
        self.in_channels, self.num_classes, self.depth = in_channels, num_classes, depth
        bn, k = bool(batch_norm), kernel_size
        ch = [width * 2**level for level in range(depth + 1)]
        convs = [min(level + 1, max_convs) for level in range(depth + 1)]
        convs[depth] = max_convs
        self.input_stage = InputStage(in_channels, width, k, bn)
        self.downs = nn.ModuleList(_resample("down", ch[i], ch[i + 1], bn) for i in range(depth))
        self.down_stages = nn.ModuleList(
            ResidualStage(ch[i], convs[i], k, bn) for i in range(1, depth + 1)
        )
        up_in = [ch[depth]] + [2 * ch[i] for i in range(depth - 1, 0, -1)]
        levels = list(range(depth - 1, -1, -1))
        self.ups = nn.ModuleList(_resample("up", c, ch[i], bn) for c, i in zip(up_in, levels))
        self.up_stages = nn.ModuleList(ResidualStage(2 * ch[i], convs[i], k, bn) for i in levels)
        self.head = blocks.conv(3, 2 * width, num_classes, 1)
        if init_std is not None:
            _normal_init(self, float(init_std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks.check_input(x, self.in_channels, 3, "vnet")
        self._check_size(tuple(x.shape[2:]))
        skips = [self.input_stage(x)]
        for down, stage in zip(self.downs, self.down_stages):
            skips.append(stage(down(skips[-1])))
        out = skips.pop()
        for up, stage in zip(self.ups, self.up_stages):
            merged = torch.cat([up(out), skips.pop()], dim=1)
            out = stage(merged)
        return self.head(out)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Same as the input (padded convolutions); the input must be accepted."""
        size = blocks.as_size(input_size, 3, "vnet")
        self._check_size(size)
        return size

    def valid_input_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """Smallest accepted size >= ``size``: each side a multiple of ``2**depth``."""
        return blocks.round_up(blocks.as_size(size, 3, "vnet"), 2**self.depth)

    def _check_size(self, size: tuple[int, ...]) -> None:
        if self.valid_input_size(size) != size:
            raise SegDeepError(
                f"vnet: input size {size} is not a multiple of {2**self.depth} on every side; "
                f"pad or crop to {self.valid_input_size(size)} (see valid_input_size)"
            )


def _normal_init(model: nn.Module, std: float) -> None:
    """Convolution weights ~ N(0, std), biases 0 (Xu et al. 2018)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _check_config(in_channels, num_classes, width, depth, kernel_size, max_convs) -> None:
    if in_channels < 1 or num_classes < 2 or width < 1 or depth < 1 or max_convs < 1:
        raise SegDeepError(
            "vnet: need in_channels >= 1, num_classes >= 2, width >= 1, depth >= 1, "
            f"max_convs >= 1 (got {in_channels}, {num_classes}, {width}, {depth}, {max_convs})"
        )
    if kernel_size % 2 != 1:
        raise SegDeepError(f"vnet: kernel_size must be odd, not {kernel_size}")
