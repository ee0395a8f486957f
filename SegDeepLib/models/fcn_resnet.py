"""FCN pre-processor + FC-ResNet (Drozdzal et al., "Learning normalized inputs for iterative
estimation in medical image segmentation", Tables I and II).

* :class:`FCNPreprocessor` (Table I): a U-Net at a quarter of the original width (16-32-64-128,
  256 across), 4 max-poolings, expanding path of "repeat" (nearest) upsampling, concatenation with
  the contracting feature map, a 2x2 convolution (no non-linearity; same padding on the
  right/bottom, as Keras does) and two 3x3 conv + ReLU; a final linear 3x3 convolution to 1 channel
  (the "normalised image"). 1.83 M parameters.
* :class:`FCResNet` (Table II): pre-activation residual blocks (BN -> ReLU -> conv). Contracting
  path: 3x3 conv (32) | simple block with max-pooling (32) | 3, 8, 10 bottleneck blocks (128, 256,
  512; the first of each downsamples with a stride-2 3x3 convolution) | 3 bottleneck blocks across
  (1024). Expanding path mirrors it: 10, 8, 3 bottleneck blocks (512, 256, 128) | simple block (32)
  | 3x3 conv (32) | 1x1 classifier. Each expanding stage works at the resolution and width of its
  contracting twin, the twin's output is **summed** in (long skip), then the stage upsamples
  ("repeat") to the next resolution. 11.5 M parameters at paper settings.
  Table II's resolutions (512 -> 32) give 4 down/4 up samplings (the text says 5; the table is
  followed here), so inputs must be multiples of 16.
* :class:`FCNResNet`: the pre-processor feeding the FC-ResNet, trainable end to end (13.3 M).

The paper's classifiers emit one sigmoid channel; here they emit K >= 2 logits (softmax over K;
for K = 2 softmax(z)[1] = sigmoid(z1 - z0), the same family of outputs). The FC-ResNet alone with
classical standardisation (preprocessing ``{"kind": "zscore"}``) is the paper's baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from SegDeepLib.errors import SegDeepError
from SegDeepLib.models.registry import register_model


def _check_size(name: str, x: torch.Tensor, in_channels: int, multiple: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise SegDeepError(
            f"{name}: input of shape {tuple(x.shape)}; expected (N, {in_channels}, H, W)"
        )
    if any(s % multiple for s in x.shape[2:]):
        raise SegDeepError(
            f"{name}: input size {tuple(x.shape[2:])} is not a multiple of {multiple}; "
            "pad to valid_input_size()"
        )


class _SameSize2D(nn.Module):
    """Geometry helpers shared by the same-size 2D networks of this module (4 poolings)."""

    spatial_dims = 2
    size_multiple = 16

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Same-size network: the output has the input's size (which must be valid)."""
        return tuple(int(s) for s in input_size)

    def valid_input_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """Nearest size >= ``size`` divisible by 16 along each axis."""
        m = self.size_multiple
        return tuple(-(-int(s) // m) * m for s in size)


# ---------------------------------------------------------------------------------------------
# Table I: the FCN pre-processor
# ---------------------------------------------------------------------------------------------
def _double_conv_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class _RepeatUp(nn.Module):
    """Up k: repeat x2, concatenate the skip, 2x2 conv (linear, same size), two 3x3 conv + ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.merge = nn.Conv2d(in_channels + skip_channels, out_channels, 2)
        self.convs = _double_conv_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), skip], dim=1)
        return self.convs(self.merge(F.pad(x, (0, 1, 0, 1))))


class FCNPreprocessor(_SameSize2D):
    """Table I U-Net. ``out_channels=1`` is the paper's pre-processor (a normalised image)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_width: int = 16) -> None:
        super().__init__()
        widths = [base_width * 2**level for level in range(5)]
        self.in_channels = in_channels
        self.down = nn.ModuleList(
            _double_conv_relu(c_in, c_out)
            for c_in, c_out in zip([in_channels, *widths[:3]], widths[:4])
        )
        self.across = _double_conv_relu(widths[3], widths[4])
        self.up = nn.ModuleList(
            _RepeatUp(widths[level + 1], widths[level], widths[level]) for level in (3, 2, 1, 0)
        )
        self.output = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, return_all: bool = False):
        """(N, C, H, W) -> (N, out_channels, H, W); ``return_all`` adds an empty aux list."""
        _check_size("fcn_preprocessor", x, self.in_channels, self.size_multiple)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.across(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = block(x, skip)
        out = self.output(x)
        return (out, []) if return_all else out


@register_model("fcn_preprocessor")
def build_fcn_preprocessor(
    in_channels: int = 1, num_classes: int = 2, base_width: int = 16
) -> FCNPreprocessor:
    """The Table I U-Net used alone as a segmenter: its last layer emits ``num_classes`` logits."""
    if num_classes < 2:
        raise SegDeepError(f"fcn_preprocessor: num_classes={num_classes}; use at least 2")
    return FCNPreprocessor(in_channels, num_classes, base_width)


# ---------------------------------------------------------------------------------------------
# Table II: the FC-ResNet
# ---------------------------------------------------------------------------------------------
def _bn_relu_conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False),
    )


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    return nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)


class SimpleBlock(nn.Module):
    """Fig. 2(c): x + [BN-ReLU-conv3x3, (dropout), BN-ReLU-conv3x3]; optional max-pool first."""

    def __init__(
        self, in_channels: int, out_channels: int, pool: bool = False, dropout: float = 0.0
    ):
        super().__init__()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.body = nn.Sequential(
            _bn_relu_conv(in_channels, out_channels, 3),
            nn.Dropout2d(dropout) if dropout else nn.Identity(),
            _bn_relu_conv(out_channels, out_channels, 3),
        )
        self.shortcut = _shortcut(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        return self.body(x) + self.shortcut(x)


class BottleneckBlock(nn.Module):
    """Fig. 2(b): x + [BN-ReLU-conv1x1 (n/4), BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1 (n)]."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        mid = max(out_channels // 4, 1)
        self.body = nn.Sequential(
            _bn_relu_conv(in_channels, mid, 1),
            _bn_relu_conv(mid, mid, 3, stride),
            nn.Dropout2d(dropout) if dropout else nn.Identity(),
            _bn_relu_conv(mid, out_channels, 1),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


def _bottleneck_stage(
    in_channels: int, out_channels: int, count: int, stride: int, dropout: float
) -> nn.Sequential:
    blocks = [BottleneckBlock(in_channels, out_channels, stride, dropout)]
    blocks += [BottleneckBlock(out_channels, out_channels, 1, dropout) for _ in range(count - 1)]
    return nn.Sequential(*blocks)


class FCResNet(_SameSize2D):
    """Table II FC-ResNet (see the module docstring).

    Args:
        in_channels: input channels (1: a pre-processed or standardised image).
        num_classes: K >= 2 output logits.
        base_width: width of Down 1 (32 at paper settings); stages use 1, 1, 4, 8, 16, 32 x it.
        blocks: bottleneck blocks of Down 3, Down 4, Down 5 and Across ((3, 8, 10, 3) in the
            paper); the expanding path mirrors Down 5, Down 4, Down 3.
        dropout: optional dropout inside every block (Fig. 2, dashed); 0 disables it.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        base_width: int = 32,
        blocks: Sequence[int] = (3, 8, 10, 3),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 2 or len(blocks) != 4 or min(blocks) < 1:
            raise SegDeepError(
                f"fc_resnet: num_classes={num_classes}, blocks={tuple(blocks)}; need "
                "num_classes >= 2 and four positive block counts"
            )
        w = [base_width * m for m in (1, 1, 4, 8, 16, 32)]
        self.in_channels = in_channels
        self.stem = nn.Conv2d(in_channels, w[0], 3, padding=1, bias=False)
        self.down = nn.ModuleList(
            [SimpleBlock(w[0], w[1], pool=True, dropout=dropout)]
            + [_bottleneck_stage(w[i], w[i + 1], blocks[i - 1], 2, dropout) for i in (1, 2, 3)]
        )
        self.across = _bottleneck_stage(w[4], w[5], blocks[3], 1, dropout)
        self.up = nn.ModuleList(
            [_bottleneck_stage(w[i + 1], w[i], blocks[i - 2], 1, dropout) for i in (4, 3, 2)]
            + [SimpleBlock(w[2], w[1], dropout=dropout)]
        )
        self.last = _bn_relu_conv(w[1], w[0], 3)
        self.classifier = nn.Sequential(
            nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True), nn.Conv2d(w[0], num_classes, 1)
        )

    def forward(self, x: torch.Tensor, return_all: bool = False):
        """(N, C, H, W) -> logits (N, K, H, W); ``return_all`` adds an empty aux list."""
        _check_size("fc_resnet", x, self.in_channels, self.size_multiple)
        skips = [self.stem(x)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        x = self.across(skips[-1])
        for stage, skip in zip(self.up, reversed(skips[1:])):
            x = F.interpolate(stage(x) + skip, scale_factor=2, mode="nearest")
        logits = self.classifier(self.last(x) + skips[0])
        return (logits, []) if return_all else logits


register_model("fc_resnet")(FCResNet)


@register_model("fcn_resnet")
class FCNResNet(_SameSize2D):
    """FCN pre-processor (1-channel output) feeding the FC-ResNet; one end-to-end model.

    ``forward(x, return_all=True)`` returns ``(logits, [])`` (no auxiliary outputs); the
    normalised image is available as ``model.preprocessor(x)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        preprocessor_width: int = 16,
        base_width: int = 32,
        blocks: Sequence[int] = (3, 8, 10, 3),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.preprocessor = FCNPreprocessor(in_channels, 1, preprocessor_width)
        self.resnet = FCResNet(1, num_classes, base_width, blocks, dropout)

    def forward(self, x: torch.Tensor, return_all: bool = False):
        logits = self.resnet(self.preprocessor(x))
        return (logits, []) if return_all else logits
