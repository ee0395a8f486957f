"""Memory the C++ CRF backend keeps between calls, and how to give it back.

The CPU extension takes every block of 64 KiB or more that a CRF call needs (the lattice tables
and the build's key arrays, the filters' vertex buffers and scratch, and the mean-field buffers
and result of :class:`~SegDeepLib.crf.CRFRNN` without autograd) from a process-wide cache, which
keeps a block when it is freed. The next call of about the same size (best fit, up to 1.5 times
the request) gets its memory back already mapped: no page faults, which cost a forward on a
128x256x256 volume 188 k faults and half a second of system time when every call mapped ~700 MB
afresh. Tensors a filter returns without an ``out`` buffer (the ones autograd keeps) come from
PyTorch's allocator.

The cache keeps at most a limit of bytes, the least recently freed blocks going first beyond it:
``SEGDEEP_CRF_CACHE_MB`` (read when the extension loads; 0 disables the cache), by default
:func:`default_cache_limit_mb` (2 GiB, or 1/8 of the RAM when smaller), or
:func:`set_cache_limit`. When a request finds no block, the blocks no request has taken for
about two calls are freed too (sizes no longer in use, e.g. the lattices of earlier bandwidths
in a grid search); repeated calls of one size never lose theirs. Blocks held by live tensors (a returned result, a filter kept by
autograd) are in use, not kept, and join the cache when freed. A long-lived process that is done
with the CRF can hand the memory back to the system with :func:`release_memory`::

    from SegDeepLib.crf import release_memory
    release_memory()

The pure-PyTorch and CUDA backends use PyTorch's allocators and are not affected.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

from SegDeepLib.crf import extension
from SegDeepLib.errors import SegDeepError

CACHE_ENV = "SEGDEEP_CRF_CACHE_MB"
CACHE_MAX_MB = 2048.0
CACHE_RAM_FRACTION = 8
STATS_KEYS = (
    "held_bytes",
    "held_blocks",
    "in_use_bytes",
    "in_use_blocks",
    "peak_in_use_blocks",
    "limit_bytes",
    "fresh_blocks",
    "reused_blocks",
    "split_blocks",
)
_override_mb: float | None = None


def default_cache_limit_mb() -> float:
    """Default cache limit: 2 GiB, or 1/8 of the physical memory when that is smaller.

    A forward on a 128x256x256 volume uses about 700 MB of large blocks, so 2 GiB keeps all of
    them plus those of a second size (or of the lattices of other bandwidths in a grid search);
    the memory fraction keeps a small machine from holding more than an eighth of its RAM idle.
    """
    try:
        ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return CACHE_MAX_MB
    return min(CACHE_MAX_MB, ram_mb / CACHE_RAM_FRACTION)


def cache_limit_mb() -> float:
    """The limit in effect: :func:`set_cache_limit`'s, else ``SEGDEEP_CRF_CACHE_MB``, else the
    default (an unreadable environment value warns and gives the default)."""
    if _override_mb is not None:
        return _override_mb
    value = os.environ.get(CACHE_ENV, "").strip()
    if not value:
        return default_cache_limit_mb()
    try:
        return _check_limit(float(value))
    except (ValueError, SegDeepError):
        warnings.warn(
            f"SegDeep CRF: {CACHE_ENV}={value!r} is not a size in MB (>= 0); using the default",
            RuntimeWarning,
            stacklevel=2,
        )
        return default_cache_limit_mb()


def set_cache_limit(megabytes: float | None) -> None:
    """Keep at most ``megabytes`` MB of freed blocks (0: none; None: back to the environment
    value or the default); frees the blocks beyond a lower limit at once."""
    global _override_mb
    _override_mb = None if megabytes is None else _check_limit(float(megabytes))
    module = _loaded()
    if module is not None:
        apply_cache_limit(module)


def release_memory() -> None:
    """Free every block the CRF cache keeps (blocks of live tensors join it when freed)."""
    module = _loaded()
    if module is not None:
        module.cache_release()


def cache_stats() -> dict[str, int]:
    """Counters of the cache: ``held_bytes``/``held_blocks`` (kept, free), ``in_use_bytes``/
    ``in_use_blocks`` (large blocks of live tensors and buffers) and ``peak_in_use_blocks``,
    ``limit_bytes``, ``fresh_blocks`` (obtained from the system), ``reused_blocks`` (served
    from the cache) and ``split_blocks`` (of those, cut from a bigger kept block) since the process
    started; all zero before the extension loads."""
    module = _loaded()
    if module is None:
        return dict.fromkeys(STATS_KEYS, 0)
    return dict(module.cache_stats())


def apply_cache_limit(module: ModuleType) -> None:
    """Give the loaded CPU extension ``module`` the limit of :func:`cache_limit_mb`."""
    module.cache_set_limit(int(cache_limit_mb() * 2**20))


def _loaded() -> ModuleType | None:
    """The CPU extension if it is loaded (never builds it: nothing is cached before)."""
    return extension.loaded("cpu")


def _check_limit(megabytes: float) -> float:
    if not 0 <= megabytes < float("inf"):
        raise SegDeepError(f"CRF cache limit: {megabytes} MB; must be a finite number >= 0")
    return megabytes


extension.on_load("cpu", apply_cache_limit)  # the limit reaches the extension when it loads
