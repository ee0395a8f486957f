// Torch binding of the plain-C CUDA kernels in crf_kernels.cu (same Python API as crf_cpu.cpp:
// lattice_filter and separable_filter; the lattice itself is built with PyTorch ops on the GPU).
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "crf_kernels.h"

namespace {

void check(int status, const char* what) {
  TORCH_CHECK(status == 0, "SegDeep CRF CUDA kernel failed in ", what, " (cudaError ", status, ")");
}

}  // namespace

torch::Tensor lattice_filter(torch::Tensor index, torch::Tensor weight, torch::Tensor neighbors,
                             torch::Tensor values, bool reverse) {
  TORCH_CHECK(values.is_cuda() && values.dim() == 2, "values must be a (C, N) CUDA tensor");
  const c10::cuda::CUDAGuard guard(values.device());
  index = index.contiguous();
  neighbors = neighbors.contiguous();
  values = values.contiguous();
  weight = weight.to(values.scalar_type()).contiguous();
  const int64_t c = values.size(0), n = values.size(1);
  const int d = static_cast<int>(index.size(1)) - 1;
  const int64_t m = neighbors.size(2);
  auto out = torch::empty_like(values);
  auto lat = torch::empty({(m + 1) * c}, values.options());
  auto tmp = torch::empty({(m + 1) * c}, values.options());
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  if (values.scalar_type() == torch::kFloat64) {
    check(segdeep_lattice_filter_f64(index.data_ptr<int64_t>(), weight.data_ptr<double>(),
                                     neighbors.data_ptr<int64_t>(), values.data_ptr<double>(),
                                     out.data_ptr<double>(), lat.data_ptr<double>(),
                                     tmp.data_ptr<double>(), n, d, c, m, reverse, stream),
          "lattice_filter");
  } else {
    TORCH_CHECK(values.scalar_type() == torch::kFloat32, "float32 or float64 values");
    check(segdeep_lattice_filter_f32(index.data_ptr<int64_t>(), weight.data_ptr<float>(),
                                     neighbors.data_ptr<int64_t>(), values.data_ptr<float>(),
                                     out.data_ptr<float>(), lat.data_ptr<float>(),
                                     tmp.data_ptr<float>(), n, d, c, m, reverse, stream),
          "lattice_filter");
  }
  return out;
}

torch::Tensor separable_filter(torch::Tensor values, std::vector<torch::Tensor> bands) {
  TORCH_CHECK(values.is_cuda(), "values must be a CUDA tensor");
  TORCH_CHECK(static_cast<int64_t>(bands.size()) == values.dim() - 1, "one band per spatial axis");
  const c10::cuda::CUDAGuard guard(values.device());
  torch::Tensor cur = values.contiguous();
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  for (size_t axis = 0; axis < bands.size(); ++axis) {
    torch::Tensor band = bands[axis].to(values.device(), values.scalar_type()).contiguous();
    const int64_t n = cur.size(axis + 1);
    int64_t outer = 1, inner = 1;
    for (int64_t k = 0; k <= static_cast<int64_t>(axis); ++k) outer *= cur.size(k);
    for (int64_t k = axis + 2; k < cur.dim(); ++k) inner *= cur.size(k);
    torch::Tensor dst = torch::empty_like(cur);
    if (values.scalar_type() == torch::kFloat64) {
      check(segdeep_band_pass_f64(cur.data_ptr<double>(), dst.data_ptr<double>(),
                                  band.data_ptr<double>(), outer, n, inner, band.size(1), stream),
            "separable_filter");
    } else {
      check(segdeep_band_pass_f32(cur.data_ptr<float>(), dst.data_ptr<float>(),
                                  band.data_ptr<float>(), outer, n, inner, band.size(1), stream),
            "separable_filter");
    }
    cur = dst;
  }
  return cur;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lattice_filter", &lattice_filter, "splat-blur-slice (CUDA); reverse = adjoint");
  m.def("separable_filter", &separable_filter, "banded separable filter (CUDA)");
}
