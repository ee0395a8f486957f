// Torch binding of the plain-C CRF kernels (crf_kernels.h), shared by the CUDA extension
// (crf_cuda.cpp: tensors on a GPU) and the host build of the same kernels (crf_emulated.cpp: CPU
// tensors). Same Python API as crf_cpu.cpp's lattice_filter and separable_filter.
//
// Every input is checked before a kernel sees it: device (all on the policy's device kind and on
// one device), dtype (values float32 or float64: float16/bfloat16 are refused with a clear error,
// the caller converts; index/neighbour tables int32 or int64, made int64; weights and bands made
// the values' dtype), shapes, and contiguity (made contiguous). A kernel error raises.
//
// Device policy (a struct): kName, on_device(tensor), Guard (from a torch::Device) and
// stream(tensor) -> void*.
#pragma once

#include <torch/extension.h>

#include <string>
#include <vector>

#include "crf_kernels.h"

namespace segdeep_binding {

inline void check_status(int status, const char* what) {
  TORCH_CHECK(status == 0, "SegDeep CRF kernel failed in ", what, " (cudaError ", status, ")");
}

template <typename Dev>
void check_device(const torch::Tensor& t, const char* name, const torch::Tensor& values) {
  TORCH_CHECK(t.defined(), "SegDeep CRF ", Dev::kName, ": ", name, " is undefined");
  TORCH_CHECK(Dev::on_device(t), "SegDeep CRF ", Dev::kName, ": ", name, " is on ", t.device(),
              "; move it to the device of the values");
  TORCH_CHECK(t.device() == values.device(), "SegDeep CRF ", Dev::kName, ": ", name, " is on ",
              t.device(), " but values are on ", values.device(), "; use one device");
}

template <typename Dev>
void check_values(const torch::Tensor& values, int64_t min_dim) {
  TORCH_CHECK(values.defined() && values.dim() >= min_dim, "SegDeep CRF ", Dev::kName,
              ": values must be a tensor with at least ", min_dim, " dimensions");
  TORCH_CHECK(Dev::on_device(values), "SegDeep CRF ", Dev::kName, ": values are on ",
              values.device(), "; this backend needs them on its device");
  const auto dtype = values.scalar_type();
  TORCH_CHECK(dtype != torch::kHalf && dtype != torch::kBFloat16, "SegDeep CRF ", Dev::kName,
              ": values are ", dtype,
              ", which the kernels do not take (sums over many points lose precision in 16 "
              "bits); convert them to float32 or float64 first");
  TORCH_CHECK(dtype == torch::kFloat32 || dtype == torch::kFloat64, "SegDeep CRF ", Dev::kName,
              ": values are ", dtype, "; must be float32 or float64");
}

// An int32/int64 table as a contiguous int64 tensor of the given leading sizes.
template <typename Dev>
torch::Tensor id_table(torch::Tensor t, const char* name, const torch::Tensor& values) {
  check_device<Dev>(t, name, values);
  TORCH_CHECK(t.scalar_type() == torch::kInt64 || t.scalar_type() == torch::kInt32,
              "SegDeep CRF ", Dev::kName, ": ", name, " must be int32 or int64, got ",
              t.scalar_type());
  return t.to(torch::kInt64).contiguous();
}

template <typename Dev>
torch::Tensor lattice_filter(torch::Tensor index, torch::Tensor weight, torch::Tensor neighbors,
                             torch::Tensor values, bool reverse,
                             c10::optional<torch::Tensor> splat_order,
                             c10::optional<torch::Tensor> splat_starts) {
  check_values<Dev>(values, 2);
  TORCH_CHECK(values.dim() == 2, "SegDeep CRF ", Dev::kName, ": values must be (C, N), got ",
              values.sizes());
  const typename Dev::Guard guard(values.device());
  index = id_table<Dev>(index, "index", values);
  neighbors = id_table<Dev>(neighbors, "neighbors", values);
  check_device<Dev>(weight, "weight", values);
  TORCH_CHECK(weight.is_floating_point(), "SegDeep CRF: weight must be floating point");
  const int64_t c = values.size(0), n = values.size(1);
  TORCH_CHECK(index.dim() == 2 && index.size(0) == n && index.size(1) >= 2, "SegDeep CRF ",
              Dev::kName, ": index must be (N, d+1) with N = ", n, " (values' columns), got ",
              index.sizes());
  TORCH_CHECK(weight.sizes() == index.sizes(), "SegDeep CRF ", Dev::kName,
              ": weight must have index's shape ", index.sizes(), ", got ", weight.sizes());
  const int d = static_cast<int>(index.size(1)) - 1;
  TORCH_CHECK(neighbors.dim() == 3 && neighbors.size(0) == d + 1 && neighbors.size(1) == 2,
              "SegDeep CRF ", Dev::kName, ": neighbors must be (d+1, 2, M) with d+1 = ", d + 1,
              ", got ", neighbors.sizes());
  const int64_t m = neighbors.size(2);
  values = values.contiguous();
  weight = weight.to(values.scalar_type()).contiguous();
  const int64_t* order_ptr = nullptr;
  const int64_t* starts_ptr = nullptr;
  torch::Tensor order, starts;
  const bool has_order = splat_order.has_value() && splat_order->defined();
  const bool has_starts = splat_starts.has_value() && splat_starts->defined();
  TORCH_CHECK(has_order == has_starts, "SegDeep CRF: give both splat_order and splat_starts");
  if (has_order) {
    order = id_table<Dev>(*splat_order, "splat_order", values);
    starts = id_table<Dev>(*splat_starts, "splat_starts", values);
    TORCH_CHECK(order.numel() == n * (d + 1) && starts.numel() == m + 1, "SegDeep CRF ",
                Dev::kName, ": splat_order needs N*(d+1) = ", n * (d + 1),
                " entries and splat_starts M+1 = ", m + 1);
    order_ptr = order.data_ptr<int64_t>();
    starts_ptr = starts.data_ptr<int64_t>();
  }
  auto out = torch::empty_like(values);
  if (n == 0 || c == 0) return out;
  auto lat = torch::empty({(m + 1) * c}, values.options());
  auto tmp = torch::empty({(m + 1) * c}, values.options());
  void* stream = Dev::stream(values);
  int status = 0;
  if (values.scalar_type() == torch::kFloat64) {
    status = segdeep_lattice_filter_f64(
        index.data_ptr<int64_t>(), weight.data_ptr<double>(), neighbors.data_ptr<int64_t>(),
        values.data_ptr<double>(), out.data_ptr<double>(), lat.data_ptr<double>(),
        tmp.data_ptr<double>(), n, d, c, m, reverse, order_ptr, starts_ptr, stream);
  } else {
    status = segdeep_lattice_filter_f32(
        index.data_ptr<int64_t>(), weight.data_ptr<float>(), neighbors.data_ptr<int64_t>(),
        values.data_ptr<float>(), out.data_ptr<float>(), lat.data_ptr<float>(),
        tmp.data_ptr<float>(), n, d, c, m, reverse, order_ptr, starts_ptr, stream);
  }
  check_status(status, "lattice_filter");
  return out;
}

template <typename Dev>
torch::Tensor separable_filter(torch::Tensor values, std::vector<torch::Tensor> bands) {
  check_values<Dev>(values, 2);
  TORCH_CHECK(static_cast<int64_t>(bands.size()) == values.dim() - 1, "SegDeep CRF ",
              Dev::kName, ": one band per spatial axis (", values.dim() - 1, "), got ",
              bands.size());
  const typename Dev::Guard guard(values.device());
  torch::Tensor cur = values.contiguous();
  void* stream = Dev::stream(values);
  for (size_t axis = 0; axis < bands.size(); ++axis) {
    TORCH_CHECK(bands[axis].defined() && bands[axis].is_floating_point(),
                "SegDeep CRF: bands must be floating point");
    torch::Tensor band = bands[axis].to(values.device(), values.scalar_type()).contiguous();
    const int64_t n = cur.size(axis + 1);
    TORCH_CHECK(band.dim() == 2 && band.size(0) == n && band.size(1) % 2 == 1, "SegDeep CRF ",
                Dev::kName, ": band ", axis, " must be (", n, ", odd width), got ", band.sizes());
    int64_t outer = 1, inner = 1;
    for (int64_t k = 0; k <= static_cast<int64_t>(axis); ++k) outer *= cur.size(k);
    for (int64_t k = axis + 2; k < cur.dim(); ++k) inner *= cur.size(k);
    torch::Tensor dst = torch::empty_like(cur);
    if (cur.numel() == 0) return dst;
    int status = 0;
    if (values.scalar_type() == torch::kFloat64) {
      status = segdeep_band_pass_f64(cur.data_ptr<double>(), dst.data_ptr<double>(),
                                     band.data_ptr<double>(), outer, n, inner, band.size(1),
                                     stream);
    } else {
      status = segdeep_band_pass_f32(cur.data_ptr<float>(), dst.data_ptr<float>(),
                                     band.data_ptr<float>(), outer, n, inner, band.size(1),
                                     stream);
    }
    check_status(status, "separable_filter");
    cur = dst;
  }
  return cur;
}

template <typename Dev>
void bind(pybind11::module& m) {
  namespace py = pybind11;
  m.def("lattice_filter", &lattice_filter<Dev>,
        "splat-blur-slice; reverse = adjoint; splat_order/splat_starts: deterministic splat",
        py::arg("index"), py::arg("weight"), py::arg("neighbors"), py::arg("values"),
        py::arg("reverse"), py::arg("splat_order") = py::none(),
        py::arg("splat_starts") = py::none());
  m.def("separable_filter", &separable_filter<Dev>, "banded separable filter", py::arg("values"),
        py::arg("bands"));
}

}  // namespace segdeep_binding
