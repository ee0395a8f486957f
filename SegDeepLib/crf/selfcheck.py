"""A tiny check of a freshly loaded CRF extension against the PyTorch backend.

Run once per process after an extension loads (:mod:`SegDeepLib.crf.extension`): a lattice
filter (forward and adjoint) and a separable filter on 60 random points, in float64, on the
extension's device. A mismatch or any error (a CUDA kernel that cannot launch on this GPU, a
binary built for another architecture) raises :class:`SelfCheckError`, and the caller falls back
to the PyTorch backend with one warning.
"""

from __future__ import annotations

from types import ModuleType

import torch

from SegDeepLib.crf import filters, lattice, separable

SHAPE = (3, 4, 5)
LABELS = 3
RTOL = 1e-6


class SelfCheckError(RuntimeError):
    """The extension gives results other than the PyTorch backend's (or fails to run)."""


def check_lattice_module(
    module: ModuleType, device: torch.device, fused: bool, kernels: bool = False
) -> None:
    """Compare ``module``'s lattice and separable filters with PyTorch's on a tiny case
    (``kernels``: the binding of the CUDA kernel bodies, ``cuda`` and its host build)."""
    try:
        _compare(module, device, fused, kernels)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except SelfCheckError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the binary means "do not use it"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SelfCheckError(f"self-check failed: {first[:160]}") from exc


def _compare(module: ModuleType, device: torch.device, fused: bool, kernels: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    n = SHAPE[0] * SHAPE[1] * SHAPE[2]
    feats = (torch.rand(n, 4, generator=gen, dtype=torch.float64) * 3).to(device)
    values = torch.rand(LABELS, n, generator=gen, dtype=torch.float64).to(device)
    dtype = torch.float64
    ref = filters.TorchLatticeFilter(lattice.build_lattice(feats, dtype), dtype)
    lat = lattice.build_lattice(feats, dtype)
    if kernels:
        ext = filters.KernelLatticeFilter(lat, dtype, module)
    else:
        ext = filters.ExtensionLatticeFilter(lat, dtype, module, fused)
    _same("lattice forward", ext.forward(values), ref.forward(values))
    _same("lattice adjoint", ext.adjoint(values), ref.adjoint(values))
    bands = separable.smoothness_bands(SHAPE, 1.5, (1.0, 1.0, 1.0), dtype)
    sep_ref = filters.SeparableFilter(SHAPE, bands, device)
    sep_ext = filters.ExtensionSeparableFilter(SHAPE, bands, device, module, fused)
    _same("separable forward", sep_ext.forward(values), sep_ref.forward(values))


def _same(what: str, got: torch.Tensor, want: torch.Tensor) -> None:
    if got.shape != want.shape or not torch.allclose(got, want, rtol=RTOL, atol=1e-9):
        diff = (got - want).abs().max().item() if got.shape == want.shape else float("nan")
        raise SelfCheckError(f"self-check: {what} differs from the PyTorch backend (max {diff:.3g})")
