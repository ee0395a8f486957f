"""Building and loading the bundled C++ (CPU) and CUDA CRF extensions.

The sources live in ``SegDeepLib/crf/csrc``. They are compiled with ``torch.utils.cpp_extension``
on first use (or ahead of time with ``segdeep crf --build-extension``) into a cache folder keyed by
the sources, the torch version and the Python version, so a build happens once per machine. A
failed build (no compiler, no nvcc, ...) logs a one-line warning and the caller falls back to the
pure-PyTorch backend; it never raises.

The CPU extension keeps its large blocks between calls; :mod:`SegDeepLib.crf.memory` sets the
limit when it loads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

LOG = logging.getLogger(__name__)
CSRC = Path(__file__).resolve().parent / "csrc"
CPU_SOURCES = ("crf_cpu.cpp",)
CUDA_SOURCES = ("crf_cuda.cpp", "crf_kernels.cu")
# The CUDA kernels built for the host by g++ alone: the "cuda_emulated" backend (CI, no GPU).
EMULATED_SOURCES = ("crf_emulated.cpp", "crf_kernels_host.cpp")
_KERNEL_HEADERS = ("crf_kernels.h", "crf_kernel_bodies.h", "crf_binding.h")
HEADERS = {"cpu": ("block_cache.h",), "cuda": _KERNEL_HEADERS, "emulated": _KERNEL_HEADERS}
_LOADED: dict[str, ModuleType | None] = {}
_ERRORS: dict[str, str] = {}


def cache_root() -> Path:
    """Folder holding compiled extensions (``SEGDEEP_EXT_CACHE`` or ~/.cache/segdeep/torch_ext)."""
    env = os.environ.get("SEGDEEP_EXT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "segdeep" / "torch_ext"


def _build_dir(kind: str, sources: tuple[str, ...]) -> tuple[str, Path]:
    digest = hashlib.sha256()
    for name in sources:
        digest.update((CSRC / name).read_bytes())
    digest.update(torch.__version__.encode())
    digest.update(sys.version.encode())
    tag = digest.hexdigest()[:12]
    name = f"segdeep_crf_{kind}_{tag}"
    return name, cache_root() / name


STALE_LOCK_S = 600.0


def _remove_stale_lock(build_dir: Path) -> None:
    """Delete a build lock left by a killed build (torch would wait on it forever).

    A lock older than :data:`STALE_LOCK_S` cannot belong to a live build (a build takes about a
    minute); removing it also releases any process already waiting on it.
    """
    lock = build_dir / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_S:
        LOG.warning("removing a stale CRF extension build lock (%.0f s old): %s", age, lock)
        lock.unlink(missing_ok=True)


def _compile(kind: str) -> ModuleType:
    from torch.utils.cpp_extension import load

    sources = {"cpu": CPU_SOURCES, "cuda": CUDA_SOURCES, "emulated": EMULATED_SOURCES}[kind]
    name, build_dir = _build_dir(kind, sources + HEADERS[kind])
    build_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_lock(build_dir)
    flags = ["-O3", "-fopenmp"]
    kwargs = {
        "name": name,
        "sources": [str(CSRC / s) for s in sources],
        "build_directory": str(build_dir),
        "extra_cflags": flags,
        "extra_ldflags": ["-fopenmp"],
        "verbose": False,
    }
    if kind == "cuda":
        kwargs["extra_cuda_cflags"] = ["-O3"]
    return load(**kwargs)


def load_extension(kind: str) -> ModuleType | None:
    """The compiled ``kind`` ("cpu", "cuda" or "emulated") extension, or None (with one warning) on failure."""
    if kind in _LOADED:
        return _LOADED[kind]
    module = None
    if os.environ.get("SEGDEEP_CRF_NO_EXTENSIONS"):
        _ERRORS[kind] = "disabled by SEGDEEP_CRF_NO_EXTENSIONS"
    elif kind == "cuda" and not torch.cuda.is_available():
        _ERRORS[kind] = "no CUDA device"
    else:
        try:
            module = _compile(kind)
        except Exception as exc:  # noqa: BLE001 - any build failure means "fall back"
            _ERRORS[kind] = _short_reason(exc)
            warnings.warn(
                f"SegDeep CRF: the {kind} extension could not be built ({_ERRORS[kind]}); "
                "falling back to the pure-PyTorch lattice",
                RuntimeWarning,
                stacklevel=2,
            )
    if module is not None and kind == "cpu":
        from SegDeepLib.crf import memory  # memory imports this module

        memory.apply_cache_limit(module)
    _LOADED[kind] = module
    return module


def _short_reason(exc: Exception) -> str:
    """One line saying why a build failed (the first compiler error when there is one)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line.lower() and "stopped" not in line]
    reason = errors[0] if errors else (lines[-1] if lines else type(exc).__name__)
    return reason[:200]


def extension_error(kind: str) -> str | None:
    """Why the ``kind`` extension is unavailable (None if it loaded or was never tried)."""
    return _ERRORS.get(kind)
