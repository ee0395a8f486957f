"""The ``torch`` backend: the permutohedral lattice and the separable Gaussian in PyTorch ops (any device)."""

from SegDeepLib.crf.backends.base import TorchBackend

BACKEND = TorchBackend()
