"""PNet-MSA: the pancreas paper's 2D network with multi-scale aggregation (Cai et al., eqs 1-4).

The network is a stack of ``num_modules`` unit modules (5 at paper settings). Unit module k has

* a **forward branch** F_k: 4 x (3x3 conv + BN + ReLU) with ``width`` (64) channels, preceded by a
  2x2 max-pooling for k >= 2, so F_k lives at 1/2^(k-1) of the input resolution;
* a **backward branch** B_k doing multi-scale aggregation: F_k is brought back to the input
  resolution by a deconvolution (``width`` channels, kernel = stride = 2^(k-1); identity for k = 1),
  concatenated with the already upsampled outputs of the former forward branches F_1..F_(k-1), and
  fused (1x1 conv + BN + ReLU, then a 3x3 conv) into the class scores of U_k.

Every U_k is supervised (deep supervision, eq. 2) and the final output is the learned weighted
fusion ``Y = sum_k w_k U_k`` (eq. 3).

How probabilities and returned logits relate (the registry contract wants logits):

* ``aux`` logits s_k (N, K, H, W): U_k = softmax(s_k) over the K classes. For K = 2 this is exactly
  the paper's sigmoid probability map: U_k[:, 1] = sigmoid(s_k[:, 1] - s_k[:, 0]).
* fusion weights ``w = softmax(fusion_scores[:k_active])`` are positive and sum to 1, so
  ``Y = sum_k w_k U_k`` is a proper probability map (a convex combination of probability maps).
* the fused output is returned as ``log(Y)`` (computed in float32, floored at 1e-12 before the
  log); ``softmax(log Y) = Y`` exactly because Y sums to 1 over classes, so any loss that applies a
  softmax to the fused logits sees the paper's Y. Cross-entropy on it is -log Y[true class].

Layer-wise training (the paper trains modules 1..k, then adds module k+1 when the loss of U_k has
converged): all modules are built up front (MSRA-initialised) and ``num_active_modules`` (or
:meth:`PNetMSA.grow`) chooses how many take part in ``forward``; growing keeps every trained weight.
The number of active modules is a buffer, so it travels with the state dict.

Input: 3 adjacent slices as channels (:func:`stack_adjacent_slices` builds them from a volume).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from SegDeepLib.errors import SegDeepError
from SegDeepLib.models.registry import register_model

_LOG_FLOOR = 1e-12


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """``kernel_size`` conv (same padding) + batch normalisation + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ForwardBranch(nn.Sequential):
    """F_k: ``depth`` x (3x3 conv + BN + ReLU), optionally after a 2x2 max-pooling."""

    def __init__(self, in_channels: int, width: int, depth: int = 4, pool: bool = False) -> None:
        layers: list[nn.Module] = [nn.MaxPool2d(2)] if pool else []
        for index in range(depth):
            layers.append(conv_bn_relu(in_channels if index == 0 else width, width))
        super().__init__(*layers)


class BackwardBranch(nn.Module):
    """B_k: fuse the concatenated full-resolution features of F_1..F_k into class scores s_k."""

    def __init__(self, num_inputs: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.fuse = conv_bn_relu(num_inputs * width, width, kernel_size=1)
        self.classify = nn.Conv2d(width, num_classes, 3, padding=1)

    def forward(self, upsampled: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classify(self.fuse(torch.cat(list(upsampled), dim=1)))


def upsampler(width: int, factor: int) -> nn.Module:
    """Deconvolution bringing a forward-branch output back to the input resolution."""
    if factor == 1:
        return nn.Identity()
    return nn.ConvTranspose2d(width, width, kernel_size=factor, stride=factor)


@register_model("pnet_msa")
class PNetMSA(nn.Module):
    """PNet-MSA (2D, deep supervision, growable). See the module docstring for the maths.

    Args:
        in_channels: input channels (3 adjacent slices at paper settings).
        num_classes: K >= 2 output classes (2 for the paper's single organ).
        num_modules: unit modules K_max (5 at paper settings).
        width: channels of every convolution/deconvolution (64 at paper settings).
        depth: conv + BN + ReLU layers per forward branch (4 at paper settings).
        num_active_modules: modules used by ``forward`` (default: all); see :meth:`grow`.
    """

    spatial_dims = 2

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        num_modules: int = 5,
        width: int = 64,
        depth: int = 4,
        num_active_modules: int | None = None,
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, num_modules=num_modules, width=width, depth=depth)
        if num_classes < 2:
            raise SegDeepError(f"pnet_msa: num_classes={num_classes}; use at least 2 (background)")
        self.in_channels, self.num_classes, self.num_modules = in_channels, num_classes, num_modules
        self.forward_branches = nn.ModuleList(
            ForwardBranch(in_channels if k == 0 else width, width, depth, pool=k > 0)
            for k in range(num_modules)
        )
        self.upsamplers = nn.ModuleList(upsampler(width, 2**k) for k in range(num_modules))
        self.backward_branches = nn.ModuleList(
            BackwardBranch(k + 1, width, num_classes) for k in range(num_modules)
        )
        self.fusion_scores = nn.Parameter(torch.zeros(num_modules))
        self.register_buffer("active_modules", torch.tensor(num_modules, dtype=torch.long))
        self.num_active_modules = num_modules if num_active_modules is None else num_active_modules
        _msra_init(self)

    # -- layer-wise training -------------------------------------------------------------------
    @property
    def num_active_modules(self) -> int:
        return int(self.active_modules)

    @num_active_modules.setter
    def num_active_modules(self, value: int) -> None:
        if not 1 <= int(value) <= self.num_modules:
            raise SegDeepError(
                f"pnet_msa: num_active_modules={value}; choose 1..{self.num_modules}"
            )
        self.active_modules.fill_(int(value))

    def grow(self) -> int:
        """Activate the next unit module (keeping all weights); returns the new active count."""
        if self.num_active_modules >= self.num_modules:
            raise SegDeepError(
                f"pnet_msa: all {self.num_modules} unit modules are already active; "
                "build the network with a larger num_modules to grow further"
            )
        self.num_active_modules = self.num_active_modules + 1
        return self.num_active_modules

    def fusion_weights(self) -> torch.Tensor:
        """w_k of eq. 3 for the active modules (positive, summing to 1)."""
        return torch.softmax(self.fusion_scores[: self.num_active_modules].float(), dim=0)

    # -- geometry ------------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        return 2 ** (self.num_modules - 1)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Same-size network: the output has the input's size (which must be valid)."""
        return tuple(int(s) for s in input_size)

    def valid_input_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """Nearest size >= ``size`` divisible by 2^(num_modules - 1) along each axis."""
        m = self.size_multiple
        return tuple(-(-int(s) // m) * m for s in size)

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, return_all: bool = False):
        """Logits log(Y) (N, K, H, W); with ``return_all`` also the U_k scores [s_1..s_k]."""
        self._check_input(x)
        features, upsampled, scores = x, [], []
        for k in range(self.num_active_modules):
            features = self.forward_branches[k](features)
            upsampled.append(self.upsamplers[k](features))
            scores.append(self.backward_branches[k](upsampled))
        fused = fuse_probabilities(scores, self.fusion_weights())
        return (fused, scores) if return_all else fused

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise SegDeepError(
                f"pnet_msa: input of shape {tuple(x.shape)}; expected (N, {self.in_channels}, H, W)"
            )
        bad = [s for s in x.shape[2:] if s % self.size_multiple]
        if bad:
            raise SegDeepError(
                f"pnet_msa: input size {tuple(x.shape[2:])} is not a multiple of "
                f"{self.size_multiple}; pad to valid_input_size()"
            )


def fuse_probabilities(scores: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """log(sum_k w_k softmax(s_k)) in float32 (weights must be positive and sum to 1)."""
    with torch.autocast(device_type=scores[0].device.type, enabled=False):
        fused = sum(w * torch.softmax(s.float(), dim=1) for w, s in zip(weights, scores))
        return torch.log(fused.clamp_min(_LOG_FLOOR))


def stack_adjacent_slices(volume: torch.Tensor) -> torch.Tensor:
    """(Z, H, W) volume -> (Z, 3, H, W): slices z-1, z, z+1 as channels (edges replicated)."""
    if volume.ndim != 3:
        raise SegDeepError(
            f"stack_adjacent_slices: volume of shape {tuple(volume.shape)}; expected (Z, H, W)"
        )
    below = torch.cat([volume[:1], volume[:-1]])
    above = torch.cat([volume[1:], volume[-1:]])
    return torch.stack([below, volume, above], dim=1)


def _msra_init(module: nn.Module) -> None:
    """MSRA (He) initialisation of every (de)convolution, as in the paper."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise SegDeepError(f"pnet_msa: {name}={value}; must be a positive integer")
