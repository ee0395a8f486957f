"""``cpp``: the lattice built and filtered by the bundled multi-threaded C++ extension (CPU)."""

from __future__ import annotations

import logging
import math

import torch

from SegDeepLib.crf import filters, lattice
from SegDeepLib.crf.backends.base import Backend
from SegDeepLib.crf.backends.features import bilateral_features, channel_betas
from SegDeepLib.crf.extension import extension_error, load_extension

LOG = logging.getLogger(__name__)


class CppBackend(Backend):
    name = "cpp"
    device_type = "cpu"
    auto_for = "cpu"
    extension = "cpu"

    def module(self):
        return load_extension(self.extension)

    def unavailable_reason(self) -> str | None:
        if self.module() is None:
            return extension_error(self.extension) or "extension unavailable"
        return None

    def build_lattice(self, features: torch.Tensor, dtype: torch.dtype) -> lattice.Lattice:
        lattice.check_feature_range(features)
        try:
            index, weight, neighbors = self.module().build_lattice(features.contiguous(), dtype)
        except RuntimeError as exc:  # key range beyond int64 packing: use the general path
            LOG.info("CRF: C++ lattice build fell back to PyTorch (%s)", str(exc).splitlines()[0])
            return lattice.build_lattice(features, dtype)
        return lattice.Lattice(index, weight, neighbors, neighbors.shape[2])

    def image_appearance_filter(self, image, spacing, theta_alpha, theta_beta, dtype):
        lat = self._grid_lattice(image, spacing, theta_alpha, theta_beta, dtype)
        if lat is None:
            feats = bilateral_features(image, spacing, theta_alpha, theta_beta)
            return self.appearance_filter(feats, dtype)
        return self.lattice_filter(lat, dtype)

    def _grid_lattice(self, image, spacing, theta_alpha, theta_beta, dtype):
        """The C++ lattice of the bilateral features computed voxel by voxel (no (N, d) array).

        Same lattice, bit for bit, as :meth:`build_lattice` of the bilateral features; None when
        the key range needs the general PyTorch path.
        """
        channels = image.shape[0]
        axis_scales = [s / theta_alpha for s in spacing]
        betas = channel_betas(theta_beta, channels)
        lo, hi = torch.aminmax(image.detach().reshape(channels, -1), dim=1)  # NaN propagates
        extents = [
            max(abs(a), abs(b)) / beta for a, b, beta in zip(lo.tolist(), hi.tolist(), betas)
        ]
        extents += [(n - 1) * a for n, a in zip(image.shape[1:], axis_scales)]
        lattice.check_feature_extent(max(extents) if all(map(math.isfinite, extents)) else math.inf)
        if image.dtype in (torch.float16, torch.bfloat16):
            image = image.float()
        elif not image.is_floating_point():
            image = image.double()  # exact for any integer intensity, like bilateral_features
        try:
            index, weight, neighbors = self.module().build_lattice_grid(
                image.detach().contiguous(), axis_scales, betas, dtype
            )
        except RuntimeError as exc:  # key range beyond int64 packing: use the general path
            LOG.info("CRF: C++ lattice build fell back to PyTorch (%s)", str(exc).splitlines()[0])
            return None
        return lattice.Lattice(index, weight, neighbors, neighbors.shape[2])

    def lattice_filter(self, lat: lattice.Lattice, dtype: torch.dtype) -> filters.MessageFilter:
        return filters.ExtensionLatticeFilter(lat, dtype, self.module(), fused=True)

    def separable_filter(self, shape, bands, device) -> filters.MessageFilter:
        return filters.ExtensionSeparableFilter(shape, bands, device, self.module(), fused=True)

    def empty(self, shape, dtype: torch.dtype, device) -> torch.Tensor:
        """The C++ extension's cached blocks (see :mod:`SegDeepLib.crf.memory`)."""
        return self.module().empty_cached(list(shape), dtype)


BACKEND = CppBackend()
