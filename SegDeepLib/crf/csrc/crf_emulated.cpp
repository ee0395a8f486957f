// Torch binding of the host build of the CUDA kernels (crf_kernels_host.cpp): the same binding
// (crf_binding.h) and kernel bodies as the CUDA extension, on CPU tensors. The "cuda_emulated"
// CRF backend, so that CI runs the GPU's code.
#include <torch/extension.h>

#include <cstdint>

#include "crf_binding.h"

extern "C" void segdeep_host_set_launch_order(uint64_t seed);

namespace {

struct HostDevice {
  static constexpr const char* kName = "emulated CUDA (host)";
  struct Guard {
    explicit Guard(const torch::Device&) {}
  };
  static bool on_device(const torch::Tensor& t) { return t.is_cpu(); }
  static void* stream(const torch::Tensor&) { return nullptr; }
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  segdeep_binding::bind<HostDevice>(m);
  m.def("set_launch_order", &segdeep_host_set_launch_order,
        "tests: visit every kernel's thread indices in a seeded permutation (0: in order)",
        pybind11::arg("seed"));
}
