"""Row-normalised message filters, one class per backend, and the autograd Function using them.

A filter is a fixed linear map ``F x = D^-1 A x`` on values (C, N), with ``A`` the (approximate)
Gaussian kernel and ``D = diag(A 1)``. It is built once per image (lattice, bands, normaliser)
and then applied for every mean-field iteration (``forward``) and for the backward pass
(``adjoint``: ``A^T D^-1 g``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from SegDeepLib.crf import exact, lattice, separable


class MessageFilter:
    """Base class: ``forward(x)`` and ``adjoint(g)`` on (C, N) tensors."""

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, grads: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ExactFilter(MessageFilter):
    """Brute-force Gaussian over ``features`` (N, d), already divided by the bandwidths."""

    def __init__(self, features: torch.Tensor, dtype: torch.dtype) -> None:
        self.features = features.to(dtype)
        ones = torch.ones(1, features.shape[0], dtype=dtype, device=features.device)
        self.norm = exact.exact_filter(self.features, ones)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return exact.exact_filter(self.features, values) / self.norm

    def adjoint(self, grads: torch.Tensor) -> torch.Tensor:
        return exact.exact_filter(self.features, grads / self.norm)


class TorchLatticeFilter(MessageFilter):
    """Permutohedral lattice filtered with PyTorch ops (any device)."""

    def __init__(self, lat: lattice.Lattice, dtype: torch.dtype) -> None:
        lat.weight = lat.weight.to(dtype)
        self.lat = lat
        ones = torch.ones(1, lat.index.shape[0], dtype=dtype, device=lat.index.device)
        self.norm = self._raw(ones, False)

    def _raw(self, values: torch.Tensor, reverse: bool) -> torch.Tensor:
        return lattice.lattice_filter(self.lat, values, reverse)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self._raw(values, False) / self.norm

    def adjoint(self, grads: torch.Tensor) -> torch.Tensor:
        return self._raw(grads / self.norm, True)


class ExtensionLatticeFilter(TorchLatticeFilter):
    """Same lattice, filtered by a compiled extension (``module.lattice_filter``)."""

    def __init__(self, lat: lattice.Lattice, dtype: torch.dtype, module) -> None:
        self.module = module
        super().__init__(lat, dtype)

    def _raw(self, values: torch.Tensor, reverse: bool) -> torch.Tensor:
        lat = self.lat
        return self.module.lattice_filter(
            lat.index, lat.weight, lat.neighbors, values.contiguous(), reverse
        )


class SeparableFilter(MessageFilter):
    """Separable row-normalised Gaussian on a grid of ``shape`` (PyTorch matrices per axis)."""

    def __init__(self, shape: Sequence[int], bands: Sequence[torch.Tensor], device) -> None:
        self.shape = tuple(shape)
        self.mats = [separable.band_matrix(b).to(device) for b in bands]
        self.mats_t = [m.t().contiguous() for m in self.mats]

    def _apply(self, values: torch.Tensor, mats: Sequence[torch.Tensor]) -> torch.Tensor:
        grid = values.reshape(values.shape[0], *self.shape)
        return separable.separable_filter_torch(grid, mats).reshape(values.shape)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self._apply(values, self.mats)

    def adjoint(self, grads: torch.Tensor) -> torch.Tensor:
        return self._apply(grads, self.mats_t)


class ExtensionSeparableFilter(MessageFilter):
    """Separable Gaussian run by a compiled extension (``module.separable_filter``)."""

    def __init__(self, shape: Sequence[int], bands: Sequence[torch.Tensor], device, module):
        self.shape = tuple(shape)
        self.module = module
        self.bands = [b.to(device) for b in bands]
        self.bands_t = [separable.transpose_band(b).to(device) for b in bands]

    def _apply(self, values: torch.Tensor, bands: Sequence[torch.Tensor]) -> torch.Tensor:
        grid = values.reshape(values.shape[0], *self.shape)
        bands = [b.to(values.dtype) for b in bands]
        return self.module.separable_filter(grid.contiguous(), bands).reshape(values.shape)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self._apply(values, self.bands)

    def adjoint(self, grads: torch.Tensor) -> torch.Tensor:
        return self._apply(grads, self.bands_t)


class _FilterFunction(torch.autograd.Function):
    """Autograd wrapper: the backward of a fixed linear filter is its adjoint."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, filt: MessageFilter) -> torch.Tensor:
        ctx.filt = filt
        return filt.forward(values)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        return ctx.filt.adjoint(grad.contiguous()), None


def apply_filter(filt: MessageFilter, values: torch.Tensor) -> torch.Tensor:
    """Differentiable ``filt.forward(values)`` for values (C, N)."""
    return _FilterFunction.apply(values, filt)


def weighted_messages(
    terms: Sequence[tuple[MessageFilter, torch.Tensor]], q: torch.Tensor
) -> torch.Tensor:
    """``sum_k w_k M_k(q)`` (L, N) for (filter, weight) ``terms`` and probabilities ``q`` (L, N).

    Row-normalised messages of a distribution sum to one, so only L-1 channels are filtered and the
    last is ``sum_k w_k - sum``; on the probability simplex (where softmax outputs live) this is
    the same function, and so is its gradient along the simplex.
    """
    part = None
    total = 0.0
    for filt, weight in terms:
        term = weight * apply_filter(filt, q[:-1])
        part = term if part is None else part + term
        total = total + weight
    return torch.cat([part, total - part.sum(0, keepdim=True)], 0)
