// Torch binding of the CUDA kernels in crf_kernels.cu (see crf_binding.h; the lattice itself is
// built with PyTorch ops on the GPU). Only c10 CUDA headers (no cuBLAS/cuSPARSE headers needed).
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "crf_binding.h"

namespace {

struct CudaDevice {
  static constexpr const char* kName = "CUDA";
  using Guard = c10::cuda::CUDAGuard;
  static bool on_device(const torch::Tensor& t) { return t.is_cuda(); }
  static void* stream(const torch::Tensor& t) {
    return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
  }
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { segdeep_binding::bind<CudaDevice>(m); }
