"""``cuda_emulated``: the CUDA backend's kernels and binding compiled for the host (g++ only).

Every kernel body of ``crf_kernel_bodies.h`` runs as a serial loop over its thread indices, on
CPU tensors: the lines of code the GPU runs, tested in CI without a GPU. Slow (one thread); never
chosen by ``auto``.
"""

from SegDeepLib.crf.backends.cuda import KernelBackend


class EmulatedCudaBackend(KernelBackend):
    name = "cuda_emulated"
    device_type = "cpu"
    extension = "emulated"


BACKEND = EmulatedCudaBackend()
