"""Dense CRF / CRF-RNN with permutohedral-lattice message passing (PyTorch, C++ and CUDA)."""

from SegDeepLib.crf.backends import BACKENDS, available_backends
from SegDeepLib.crf.crfrnn import CRFRNN, crf_refine
from SegDeepLib.crf.grid_search import grid_search

__all__ = ["BACKENDS", "CRFRNN", "available_backends", "crf_refine", "grid_search"]
