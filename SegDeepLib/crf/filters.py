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

    def forward_into(self, values: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``forward(values)``, written into ``out`` where the backend can (no autograd use)."""
        return self.forward(values)


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
        self.norm = self._normaliser(lat.index.shape[0], dtype, lat.index.device)

    def _normaliser(self, n: int, dtype: torch.dtype, device) -> torch.Tensor:
        """(1, n): the filtered constant 1."""
        return self._raw(torch.ones(1, n, dtype=dtype, device=device), False)

    def _raw(self, values: torch.Tensor, reverse: bool) -> torch.Tensor:
        return lattice.lattice_filter(self.lat, values, reverse)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self._raw(values, False) / self.norm

    def forward_into(self, values: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return lattice.lattice_filter(self.lat, values, out=out).div_(self.norm)

    def adjoint(self, grads: torch.Tensor) -> torch.Tensor:
        return self._raw(grads / self.norm, True)


class ExtensionLatticeFilter(TorchLatticeFilter):
    """Same lattice, filtered by a compiled extension (``module.lattice_filter``).

    ``fused``: the module divides by the normaliser inside its splat/slice loops (the C++ one;
    no extra pass over the values); otherwise the filter output is divided separately.
    """

    def __init__(self, lat: lattice.Lattice, dtype: torch.dtype, module, fused: bool = False):
        self.module = module
        self.fused = fused
        super().__init__(lat, dtype)

    def _normaliser(self, n: int, dtype: torch.dtype, device) -> torch.Tensor:
        if self.fused:  # the C++ module, in place in a buffer of its block cache
            ones = self.module.empty_cached([1, n], dtype).fill_(1.0)
            return self._raw(ones, False, out=ones)
        return super()._normaliser(n, dtype, device)

    def _raw(self, values: torch.Tensor, reverse: bool, **divide) -> torch.Tensor:
        lat = self.lat
        return self.module.lattice_filter(
            lat.index, lat.weight, lat.neighbors, values.contiguous(), reverse, **divide
        )

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self._raw(values, False, divide_after=self.norm.reshape(-1))
        return super().forward(values)

    def forward_into(self, values: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self._raw(values, False, divide_after=self.norm.reshape(-1), out=out)
        return self.forward(values)

    def adjoint(self, grads: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self._raw(grads, True, divide_before=self.norm.reshape(-1))
        return super().adjoint(grads)


class KernelLatticeFilter(TorchLatticeFilter):
    """Lattice filtered by the CUDA kernels (``cuda``) or their host build (``cuda_emulated``).

    The tables are made int64 and checked once (every id in range: a kernel would read out of
    bounds otherwise). Under ``torch.use_deterministic_algorithms(True)`` the splat is the sorted
    segmented reduction (a stable argsort of the index, made once): bit-identical run to run,
    where the default float atomics sum in the order the hardware runs the threads.
    """

    def __init__(self, lat: lattice.Lattice, dtype: torch.dtype, module) -> None:
        self.module = module
        self._order: tuple[torch.Tensor, torch.Tensor] | None = None
        index, neighbors = lat.index.long(), lat.neighbors.long()  # no copy when int64
        _check_ids(index, neighbors, lat.num_vertices)
        super().__init__(lattice.Lattice(index, lat.weight, neighbors, lat.num_vertices), dtype)

    def splat_order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(order, starts): the (point, vertex) pairs sorted by vertex, stable, and where each
        vertex's run starts (M + 1 entries)."""
        if self._order is None:
            keys, order = torch.sort(self.lat.index.reshape(-1), stable=True)
            verts = torch.arange(self.lat.num_vertices + 1, device=keys.device)
            self._order = (order, torch.searchsorted(keys, verts))
        return self._order

    def _raw(self, values: torch.Tensor, reverse: bool) -> torch.Tensor:
        extra = {}
        if torch.are_deterministic_algorithms_enabled():
            extra = dict(zip(("splat_order", "splat_starts"), self.splat_order()))
        lat = self.lat
        return self.module.lattice_filter(
            lat.index, lat.weight, lat.neighbors, values, reverse, **extra
        )

    def forward_into(self, values: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return self.forward(values)


def _check_ids(index: torch.Tensor, neighbors: torch.Tensor, m: int) -> None:
    """Raise unless 0 <= index < m and 0 <= neighbors <= m (m: the always-zero vertex)."""
    for name, ids, top in (("index", index, m - 1), ("neighbors", neighbors, m)):
        if ids.numel() == 0:
            continue
        lo, hi = torch.aminmax(ids)
        if int(lo) < 0 or int(hi) > top:
            raise ValueError(
                f"CRF lattice: {name} ids in [{int(lo)}, {int(hi)}], outside [0, {top}]"
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
    """Separable Gaussian run by a compiled extension (``module.separable_filter``).

    ``fused``: the module takes a scratch volume for its intermediate passes (the C++ one), which
    this filter keeps and reuses across calls (a block of the module's cache).
    """

    def __init__(
        self, shape: Sequence[int], bands: Sequence[torch.Tensor], device, module, fused=False
    ):
        self.shape = tuple(shape)
        self.module = module
        self.bands = [b.to(device) for b in bands]
        self.bands_t = [separable.transpose_band(b).to(device) for b in bands]
        self.scratch: torch.Tensor | None = None
        self.fused = fused

    def _apply(self, values: torch.Tensor, bands: Sequence[torch.Tensor], out=None) -> torch.Tensor:
        grid = values.reshape(values.shape[0], *self.shape).contiguous()
        bands = [b.to(values.dtype) for b in bands]
        if not self.fused:
            return self.module.separable_filter(grid, bands).reshape(values.shape)
        if (
            self.scratch is None
            or self.scratch.shape != grid.shape
            or self.scratch.dtype != grid.dtype
        ):
            self.scratch = self.module.empty_cached(list(grid.shape), grid.dtype)
        if out is not None:
            out = out.view(grid.shape)
        return self.module.separable_filter(grid, bands, self.scratch, out).reshape(values.shape)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self._apply(values, self.bands)

    def forward_into(self, values: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return self._apply(values, self.bands, out)

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
