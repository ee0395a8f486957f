"""CRF message-passing backends: discovery, automatic choice and filter construction.

* ``exact``: brute-force O(N^2) Gaussians (tiny volumes; the reference in tests);
* ``torch``: permutohedral lattice + separable Gaussian in PyTorch ops (any device, always there);
* ``cpp``: the same operators in the bundled multi-threaded C++ extension (CPU tensors);
* ``cuda``: the lattice built with PyTorch ops on the GPU, filtered by the bundled CUDA kernels.

``auto`` picks ``cuda`` for CUDA tensors and ``cpp`` for CPU tensors when their extension builds,
else ``torch``. It never picks ``exact``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from SegDeepLib.crf import extension, filters, lattice, separable
from SegDeepLib.crf.extension import extension_error, load_extension
from SegDeepLib.errors import SegDeepError
from SegDeepLib.progress import CancelToken, ProgressCallback

LOG = logging.getLogger(__name__)
BACKENDS = ("exact", "torch", "cpp", "cuda")
EXTENSION_OF = {"cpp": "cpu", "cuda": "cuda"}  # backend -> extension kind (extension.KINDS)
_LOGGED: set[str] = set()


def available_backends() -> list[str]:
    """Backends usable in this process (builds the extensions on first call; cached)."""
    names = ["exact", "torch"]
    if load_extension("cpu") is not None:
        names.append("cpp")
    if torch.cuda.is_available() and load_extension("cuda") is not None:
        names.append("cuda")
    return names


def backend_report() -> dict[str, dict]:
    """Each backend's state without building anything: ``{name: {"state": "built" | "buildable"
    | "unavailable", "reason": str | None[, "build_estimate_s": s]}}`` (``segdeep info``)."""
    report = {}
    for name in BACKENDS:
        kind = EXTENSION_OF.get(name)
        if kind is None:  # pure PyTorch: always there
            report[name] = extension.KindStatus("built").to_dict()
        else:
            report[name] = extension.status(kind).to_dict()
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
    kind = EXTENSION_OF.get(name)
    if kind is not None:
        load_extension(kind, progress=progress, cancel=cancel)


def resolve_backend(name: str, device: torch.device) -> str:
    """The concrete backend for ``name`` ("auto" or one of BACKENDS) on ``device``."""
    if name not in BACKENDS + ("auto",):
        raise SegDeepError(f"CRF backend '{name}': unknown; use one of auto, {', '.join(BACKENDS)}")
    if name == "auto":
        kind = "cuda" if device.type == "cuda" else "cpu"
        chosen = "torch"
        if device.type in ("cpu", "cuda") and load_extension(kind) is not None:
            chosen = "cpp" if kind == "cpu" else "cuda"
    else:
        chosen = name
        _check_explicit(name, device)
    if chosen not in _LOGGED:
        LOG.info("CRF backend: %s (requested %s, device %s)", chosen, name, device)
        _LOGGED.add(chosen)
    return chosen


def _check_explicit(name: str, device: torch.device) -> None:
    if name in ("cpp", "cuda"):
        wanted = "cpu" if name == "cpp" else "cuda"
        if device.type != wanted:
            raise SegDeepError(f"CRF backend '{name}': needs {wanted} tensors, got {device.type}")
        if load_extension(wanted) is None:
            raise SegDeepError(
                f"CRF backend '{name}': extension unavailable ({extension_error(wanted)}); "
                "use backend='auto' to fall back to the PyTorch lattice"
            )


def grid_positions(shape: Sequence[int], spacing: Sequence[float], device) -> torch.Tensor:
    """(N, S) voxel positions in millimetres (float64), C order over ``shape``."""
    out = torch.empty(int(math.prod(shape)), len(shape), dtype=torch.float64, device=device)
    _fill_positions(out, shape, spacing, 1.0)
    return out


def _fill_positions(out: torch.Tensor, shape, spacing, theta: float) -> None:
    """Write position / theta of every voxel into the first len(shape) columns of ``out``."""
    for axis, (n, s) in enumerate(zip(shape, spacing)):
        view = [1] * len(shape)
        view[axis] = n
        coord = torch.arange(n, dtype=torch.float64, device=out.device).mul_(s / theta)
        out[:, axis].view(*shape).copy_(coord.view(view).expand(*shape))


def bilateral_features(
    image: torch.Tensor, spacing: Sequence[float], theta_alpha: float, theta_beta: Sequence[float]
) -> torch.Tensor:
    """(N, S + C) appearance features of ``image`` (C, *spatial), scaled by the bandwidths."""
    shape, channels = image.shape[1:], image.shape[0]
    out = torch.empty(
        int(math.prod(shape)), len(shape) + channels, dtype=torch.float64, device=image.device
    )
    _fill_positions(out, shape, spacing, theta_alpha)
    betas = list(theta_beta) * (channels if len(theta_beta) == 1 else 1)
    for c in range(channels):
        out[:, len(shape) + c].copy_(image[c].reshape(-1)).div_(betas[c])
    return out


def grid_feature_source(
    image: torch.Tensor, spacing: Sequence[float], theta_alpha: float, theta_beta: Sequence[float]
) -> lattice.FeatureSource:
    """The rows of :func:`bilateral_features` (same values, bit for bit), made on demand."""
    shape, channels = list(image.shape[1:]), image.shape[0]
    scales = [s / theta_alpha for s in spacing]
    betas = list(theta_beta) * (channels if len(theta_beta) == 1 else 1)
    flat = image.detach().reshape(channels, -1)
    n = flat.shape[1]

    def rows(sel: slice) -> torch.Tensor:
        ids = torch.arange(sel.start, min(sel.stop, n), device=image.device)
        out = torch.empty(
            ids.numel(), len(shape) + channels, dtype=torch.float64, device=ids.device
        )
        for axis in range(len(shape) - 1, -1, -1):
            torch.mul((ids % shape[axis]).double(), scales[axis], out=out[:, axis])
            ids = ids // shape[axis]
        for c in range(channels):
            out[:, len(shape) + c].copy_(flat[c, sel]).div_(betas[c])
        return out

    lo, hi = torch.aminmax(flat, dim=1)  # NaN propagates
    div = torch.tensor(betas, dtype=torch.float64, device=image.device)
    low = torch.cat([torch.zeros(len(shape), dtype=torch.float64, device=div.device), lo / div])
    top = torch.tensor([(k - 1) * a for k, a in zip(shape, scales)], dtype=torch.float64)
    high = torch.cat([top.to(div.device), hi / div])
    return lattice.FeatureSource(rows, n, low, high)


def build_lattice_for(
    backend: str, features: torch.Tensor, dtype: torch.dtype = torch.float64
) -> lattice.Lattice:
    """Lattice of ``features`` (N, d) float64, built by the C++ extension when it is the backend."""
    if backend == "cpp":
        lattice.check_feature_range(features)
        module = load_extension("cpu")
        try:
            index, weight, neighbors = module.build_lattice(features.contiguous(), dtype)
        except RuntimeError as exc:  # key range beyond int64 packing: use the general path
            LOG.info("CRF: C++ lattice build fell back to PyTorch (%s)", str(exc).splitlines()[0])
            return lattice.build_lattice(features, dtype)
        return lattice.Lattice(index, weight, neighbors, neighbors.shape[2])
    return lattice.build_lattice(features, dtype)


def _grid_lattice_cpp(
    image: torch.Tensor,
    spacing: Sequence[float],
    theta_alpha: float,
    theta_beta: Sequence[float],
    dtype: torch.dtype,
) -> lattice.Lattice | None:
    """The C++ lattice of :func:`bilateral_features` computed voxel by voxel (no (N, d) array).

    Same lattice, bit for bit, as ``build_lattice_for("cpp", bilateral_features(...))``; None
    when the key range needs the general PyTorch path.
    """
    channels = image.shape[0]
    axis_scales = [s / theta_alpha for s in spacing]
    betas = [float(b) for b in theta_beta] * (channels if len(theta_beta) == 1 else 1)
    lo, hi = torch.aminmax(image.detach().reshape(channels, -1), dim=1)  # NaN propagates
    extents = [max(abs(a), abs(b)) / beta for a, b, beta in zip(lo.tolist(), hi.tolist(), betas)]
    extents += [(n - 1) * a for n, a in zip(image.shape[1:], axis_scales)]
    lattice.check_feature_extent(max(extents) if all(map(math.isfinite, extents)) else math.inf)
    if image.dtype in (torch.float16, torch.bfloat16):
        image = image.float()
    elif not image.is_floating_point():
        image = image.double()  # exact for any integer intensity, like bilateral_features
    try:
        index, weight, neighbors = load_extension("cpu").build_lattice_grid(
            image.detach().contiguous(), axis_scales, betas, dtype
        )
    except RuntimeError as exc:  # key range beyond int64 packing: use the general path
        LOG.info("CRF: C++ lattice build fell back to PyTorch (%s)", str(exc).splitlines()[0])
        return None
    return lattice.Lattice(index, weight, neighbors, neighbors.shape[2])


def appearance_filter(
    backend: str, features: torch.Tensor, dtype: torch.dtype
) -> filters.MessageFilter:
    """Row-normalised appearance (bilateral) filter over scaled ``features`` (N, d)."""
    if backend == "exact":
        return filters.ExactFilter(features, dtype)
    lat = build_lattice_for(backend, features, dtype)
    return _lattice_filter(backend, lat, dtype)


def _lattice_filter(
    backend: str, lat: lattice.Lattice, dtype: torch.dtype
) -> filters.MessageFilter:
    if backend == "torch":
        return filters.TorchLatticeFilter(lat, dtype)
    module = load_extension(_kind(backend))
    return filters.ExtensionLatticeFilter(lat, dtype, module, fused=backend == "cpp")


def image_appearance_filter(
    backend: str,
    image: torch.Tensor,
    spacing: Sequence[float],
    theta_alpha: float,
    theta_beta: Sequence[float],
    dtype: torch.dtype,
) -> filters.MessageFilter:
    """Appearance filter of ``image`` (C, *spatial): same as ``appearance_filter`` of its
    :func:`bilateral_features`, without building them for the C++ and torch backends."""
    if backend == "cpp":
        lat = _grid_lattice_cpp(image, spacing, theta_alpha, theta_beta, dtype)
        if lat is not None:
            return _lattice_filter(backend, lat, dtype)
    if backend == "torch":  # features made chunk by chunk, never all at once
        source = grid_feature_source(image, spacing, theta_alpha, theta_beta)
        return _lattice_filter(backend, lattice.build_lattice_from(source, dtype), dtype)
    feats = bilateral_features(image, spacing, theta_alpha, theta_beta)
    return appearance_filter(backend, feats, dtype)


def smoothness_filter(
    backend: str,
    shape: Sequence[int],
    spacing: Sequence[float],
    theta_gamma: float,
    device,
    dtype: torch.dtype,
) -> filters.MessageFilter:
    """Row-normalised smoothness (position-only) filter: separable, or brute force for exact."""
    if backend == "exact":
        return filters.ExactFilter(grid_positions(shape, spacing, device) / theta_gamma, dtype)
    bands = separable.smoothness_bands(shape, theta_gamma, spacing, dtype)
    if backend == "torch":
        return filters.SeparableFilter(shape, bands, device)
    module = load_extension(_kind(backend))
    return filters.ExtensionSeparableFilter(shape, bands, device, module, fused=backend == "cpp")


def empty(backend: str, shape: Sequence[int], dtype: torch.dtype, device) -> torch.Tensor:
    """Uninitialised buffer for ``backend``: the C++ extension's cached blocks for ``cpp``."""
    if backend == "cpp":
        return load_extension("cpu").empty_cached(list(shape), dtype)
    return torch.empty(tuple(shape), dtype=dtype, device=device)


def _kind(backend: str) -> str:
    return EXTENSION_OF[backend]
