"""CRF message-passing backends: one object per backend behind a small registry.

* ``exact``: brute-force O(N^2) Gaussians (tiny volumes; the reference in tests);
* ``torch``: permutohedral lattice + separable Gaussian in PyTorch ops (any device, always there);
* ``cpp``: the same operators in the bundled multi-threaded C++ extension (CPU tensors);
* ``cuda``: the lattice built with PyTorch ops on the GPU, filtered by the bundled CUDA kernels;
* ``cuda_emulated``: the CUDA kernels compiled for the host (CPU tensors; CI runs the GPU's code).

``auto`` picks ``cuda`` for CUDA tensors and ``cpp`` for CPU tensors when their extension builds,
else ``torch``. It never picks ``exact`` or ``cuda_emulated``. The functions below take a
backend's name and dispatch to its object (see :mod:`.base` for the interface). The ``torch``
backend lives in ``pytorch.py`` (a submodule named ``torch`` would shadow the package's
``import torch``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from SegDeepLib.crf import extension, filters, lattice
from SegDeepLib.crf.backends import cpp, cuda, cuda_emulated, exact, pytorch
from SegDeepLib.crf.backends.base import Backend
from SegDeepLib.crf.backends.features import (
    bilateral_features,
    grid_feature_source,
    grid_positions,
)
from SegDeepLib.errors import SegDeepError
from SegDeepLib.progress import CancelToken, ProgressCallback
from SegDeepLib.registry import Registry

LOG = logging.getLogger(__name__)
REGISTRY = Registry("CRF backend")  # name -> Backend object, in registration order
for _module in (exact, pytorch, cpp, cuda, cuda_emulated):
    REGISTRY.add(_module.BACKEND.name, _module.BACKEND)
BACKENDS = tuple(REGISTRY)
_LOGGED: set[str] = set()

__all__ = [
    "BACKENDS",
    "REGISTRY",
    "appearance_filter",
    "available_backends",
    "backend_report",
    "bilateral_features",
    "build_lattice_for",
    "empty",
    "get_backend",
    "grid_feature_source",
    "grid_positions",
    "image_appearance_filter",
    "prepare_backend",
    "resolve_backend",
    "smoothness_filter",
]


def get_backend(name: str) -> Backend:
    """The backend object registered as ``name``."""
    return REGISTRY.get(name)


def available_backends() -> list[str]:
    """Backends usable in this process (builds the extensions on first call; cached)."""
    return [name for name, backend in REGISTRY.items() if backend.unavailable_reason() is None]


def backend_report() -> dict[str, dict]:
    """Each backend's state without building anything: ``{name: {"state": "built" | "buildable"
    | "unavailable", "reason": str | None[, "build_estimate_s": s]}}`` (``segdeep info``)."""
    report = {}
    for name, backend in REGISTRY.items():
        if backend.extension is None:  # pure PyTorch: always there
            report[name] = extension.KindStatus("built").to_dict()
        else:
            report[name] = extension.status(backend.extension).to_dict()
    return report


def prepare_backend(
    device: torch.device,
    name: str = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> None:
    """Load (building on first use) the extension that backend ``name`` uses on ``device``, so
    that a first build shows as its own progress stage (``extension.BUILD_STAGE``)."""
    if name == "auto":
        name = "cuda" if device.type == "cuda" else "cpp"
    kind = REGISTRY.get(name).extension
    if kind is not None:
        extension.load_extension(kind, progress=progress, cancel=cancel)


def resolve_backend(name: str, device: torch.device) -> str:
    """The concrete backend for ``name`` ("auto" or one of BACKENDS) on ``device``."""
    if name not in BACKENDS + ("auto",):
        raise SegDeepError(f"CRF backend '{name}': unknown; use one of auto, {', '.join(BACKENDS)}")
    if name == "auto":
        chosen = "torch"
        for candidate, backend in REGISTRY.items():
            if backend.auto_for == device.type and backend.unavailable_reason() is None:
                chosen = candidate
                break
    else:
        chosen = name
        REGISTRY.get(name).check(device)
    if chosen not in _LOGGED:
        LOG.info("CRF backend: %s (requested %s, device %s)", chosen, name, device)
        _LOGGED.add(chosen)
    return chosen


def build_lattice_for(
    backend: str, features: torch.Tensor, dtype: torch.dtype = torch.float64
) -> lattice.Lattice:
    """Lattice of ``features`` (N, d) float64, built by the C++ extension when it is the backend."""
    return REGISTRY.get(backend).build_lattice(features, dtype)


def appearance_filter(
    backend: str, features: torch.Tensor, dtype: torch.dtype
) -> filters.MessageFilter:
    """Row-normalised appearance (bilateral) filter over scaled ``features`` (N, d)."""
    return REGISTRY.get(backend).appearance_filter(features, dtype)


def image_appearance_filter(
    backend: str,
    image: torch.Tensor,
    spacing: Sequence[float],
    theta_alpha: float,
    theta_beta: Sequence[float],
    dtype: torch.dtype,
) -> filters.MessageFilter:
    """Appearance filter of ``image`` (C, *spatial): same as ``appearance_filter`` of its
    :func:`bilateral_features`, without building them for the lattice backends."""
    return REGISTRY.get(backend).image_appearance_filter(
        image, spacing, theta_alpha, theta_beta, dtype
    )


def smoothness_filter(
    backend: str,
    shape: Sequence[int],
    spacing: Sequence[float],
    theta_gamma: float,
    device,
    dtype: torch.dtype,
) -> filters.MessageFilter:
    """Row-normalised smoothness (position-only) filter: separable, or brute force for exact."""
    return REGISTRY.get(backend).smoothness_filter(shape, spacing, theta_gamma, device, dtype)


def empty(backend: str, shape: Sequence[int], dtype: torch.dtype, device) -> torch.Tensor:
    """Uninitialised buffer for ``backend``: the C++ extension's cached blocks for ``cpp``."""
    return REGISTRY.get(backend).empty(shape, dtype, device)
