"""The CRF backend interface and the PyTorch-lattice implementation the others build on.

A backend makes the two row-normalised message filters of an image (appearance: bilateral;
smoothness: position only) and, for the mean field without autograd, its work buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from SegDeepLib.crf import filters, lattice, separable
from SegDeepLib.crf.backends.features import grid_feature_source
from SegDeepLib.errors import SegDeepError


class Backend:
    """One way of running the CRF's message passing.

    ``device_type``: the tensors it takes ("cpu", "cuda"; None: any device). ``auto_for``: the
    device type for which ``backend="auto"`` prefers it over the PyTorch lattice (None: never).
    """

    name = ""
    device_type: str | None = None
    auto_for: str | None = None
    extension: str | None = None  # the bundled extension kind it runs on (crf.extension.KINDS)

    def unavailable_reason(self) -> str | None:
        """Why it cannot run in this process (None: it can; may build an extension, once)."""
        return None

    def check(self, device: torch.device) -> None:
        """Raise a clear error when it was asked for explicitly but cannot run on ``device``."""
        if self.device_type is not None and device.type != self.device_type:
            raise SegDeepError(
                f"CRF backend '{self.name}': needs {self.device_type} tensors, got {device.type}"
            )
        reason = self.unavailable_reason()
        if reason is not None:
            raise SegDeepError(
                f"CRF backend '{self.name}': unavailable ({reason}); "
                "use backend='auto' to fall back to the PyTorch lattice"
            )

    def build_lattice(self, features: torch.Tensor, dtype: torch.dtype) -> lattice.Lattice:
        """Lattice of ``features`` (N, d) float64."""
        return lattice.build_lattice(features, dtype)

    def appearance_filter(
        self, features: torch.Tensor, dtype: torch.dtype
    ) -> filters.MessageFilter:
        """Row-normalised appearance (bilateral) filter over scaled ``features`` (N, d)."""
        return self.lattice_filter(self.build_lattice(features, dtype), dtype)

    def image_appearance_filter(
        self,
        image: torch.Tensor,
        spacing: Sequence[float],
        theta_alpha: float,
        theta_beta: Sequence[float],
        dtype: torch.dtype,
    ) -> filters.MessageFilter:
        """Appearance filter of ``image`` (C, *spatial): that of its bilateral features, whose
        rows a lattice backend makes chunk by chunk (never the whole (N, d) float64 array)."""
        source = grid_feature_source(image, spacing, theta_alpha, theta_beta)
        return self.lattice_filter(lattice.build_lattice_from(source, dtype), dtype)

    def lattice_filter(self, lat: lattice.Lattice, dtype: torch.dtype) -> filters.MessageFilter:
        """The message filter running on a built lattice."""
        raise NotImplementedError

    def smoothness_filter(
        self,
        shape: Sequence[int],
        spacing: Sequence[float],
        theta_gamma: float,
        device,
        dtype: torch.dtype,
    ) -> filters.MessageFilter:
        """Row-normalised smoothness (position-only) filter."""
        bands = separable.smoothness_bands(shape, theta_gamma, spacing, dtype)
        return self.separable_filter(shape, bands, device)

    def separable_filter(
        self, shape: Sequence[int], bands: Sequence[torch.Tensor], device
    ) -> filters.MessageFilter:
        raise NotImplementedError

    def empty(self, shape: Sequence[int], dtype: torch.dtype, device) -> torch.Tensor:
        """Uninitialised work buffer for the mean field."""
        return torch.empty(tuple(shape), dtype=dtype, device=device)


class TorchBackend(Backend):
    """Permutohedral lattice + separable Gaussian in PyTorch ops (any device, always there)."""

    name = "torch"

    def lattice_filter(self, lat: lattice.Lattice, dtype: torch.dtype) -> filters.MessageFilter:
        return filters.TorchLatticeFilter(lat, dtype)

    def separable_filter(self, shape, bands, device) -> filters.MessageFilter:
        return filters.SeparableFilter(shape, bands, device)
