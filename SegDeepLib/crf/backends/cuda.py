"""``cuda``: the lattice built with PyTorch ops on the GPU, filtered by the bundled CUDA kernels."""

from __future__ import annotations

import torch

from SegDeepLib.crf import filters, lattice
from SegDeepLib.crf.backends.base import Backend
from SegDeepLib.crf.extension import extension_error, load_extension


class KernelBackend(Backend):
    """The kernels of ``crf_kernel_bodies.h`` behind the binding of ``crf_binding.h``."""

    extension = "cuda"  # "cuda" (GPU) or "emulated" (its host build)

    def module(self):
        return load_extension(self.extension)

    def unavailable_reason(self) -> str | None:
        if self.extension == "cuda" and not torch.cuda.is_available():
            return "no CUDA device"
        if self.module() is None:
            return extension_error(self.extension) or "extension unavailable"
        return None

    def lattice_filter(self, lat: lattice.Lattice, dtype: torch.dtype) -> filters.MessageFilter:
        return filters.KernelLatticeFilter(lat, dtype, self.module())

    def separable_filter(self, shape, bands, device) -> filters.MessageFilter:
        return filters.ExtensionSeparableFilter(shape, bands, device, self.module())


class CudaBackend(KernelBackend):
    name = "cuda"
    device_type = "cuda"
    auto_for = "cuda"


BACKEND = CudaBackend()
