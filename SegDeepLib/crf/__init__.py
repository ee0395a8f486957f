"""Dense CRF / CRF-RNN with permutohedral-lattice message passing (PyTorch, C++ and CUDA).

The C++ backend keeps its large buffers between calls (bounded by ``SEGDEEP_CRF_CACHE_MB``, by
default 2 GiB or 1/8 of the RAM); :func:`release_memory` frees them (see :mod:`.memory`). Its
splat's per-thread copies of the vertex buffer are capped by ``SEGDEEP_CRF_SPLAT_MB`` (default
1024). Backends: :mod:`.backends` (``cuda_emulated`` runs the CUDA kernels on the host, for CI).
"""

from SegDeepLib.crf.backends import BACKENDS, available_backends, backend_report, prepare_backend
from SegDeepLib.crf.crfrnn import CRFRNN, crf_refine
from SegDeepLib.crf.grid_search import grid_search
from SegDeepLib.crf.memory import cache_stats, release_memory, set_cache_limit

__all__ = [
    "BACKENDS",
    "CRFRNN",
    "available_backends",
    "backend_report",
    "cache_stats",
    "crf_refine",
    "grid_search",
    "prepare_backend",
    "release_memory",
    "set_cache_limit",
]
