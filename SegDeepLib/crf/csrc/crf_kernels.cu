// SegDeep CRF CUDA kernels: launches the kernel bodies of crf_kernel_bodies.h (permutohedral
// lattice splat / blur / slice and banded separable passes), one thread per index. Plain CUDA
// C++: no torch headers, compiled by nvcc alone (see crf_kernels.h).
#include <cuda_runtime.h>

#include "crf_kernel_bodies.h"
#include "crf_kernels.h"

namespace {

constexpr int kThreads = 256;

template <typename F>
__global__ void run_kernel(F kernel, int64_t count) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p < count) kernel(p);
}

// Launches every kernel on one stream; remembers the first launch error.
struct DeviceLaunch {
  cudaStream_t stream;
  int error = 0;

  template <typename F>
  void operator()(int64_t count, const F& kernel) {
    if (count <= 0 || error != 0) return;  // a grid of 0 blocks is a launch error
    const int64_t blocks = (count + kThreads - 1) / kThreads;
    run_kernel<F><<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(kernel, count);
    error = static_cast<int>(cudaGetLastError());
  }
  int status() const { return error != 0 ? error : static_cast<int>(cudaGetLastError()); }
};

template <typename T>
int lattice_filter(const int64_t* index, const T* weight, const int64_t* neighbors,
                   const T* values, T* out, T* lat, T* tmp, int64_t n, int d, int64_t c,
                   int64_t m, int reverse, const int64_t* order, const int64_t* starts,
                   void* stream) {
  DeviceLaunch launch{static_cast<cudaStream_t>(stream)};
  return segdeep_kernels::lattice_filter_steps<T>(launch, index, weight, neighbors, values, out,
                                                  lat, tmp, n, d, c, m, reverse, order, starts);
}

template <typename T>
int band_pass(const T* src, T* dst, const T* band, int64_t outer, int64_t n, int64_t inner,
              int64_t width, void* stream) {
  DeviceLaunch launch{static_cast<cudaStream_t>(stream)};
  return segdeep_kernels::band_pass_steps<T>(launch, src, dst, band, outer, n, inner, width);
}

}  // namespace

extern "C" {

int segdeep_lattice_filter_f32(const int64_t* index, const float* weight, const int64_t* neighbors,
                               const float* values, float* out, float* lat, float* tmp, int64_t n,
                               int d, int64_t c, int64_t m, int reverse,
                               const int64_t* splat_order, const int64_t* splat_starts,
                               void* stream) {
  return lattice_filter<float>(index, weight, neighbors, values, out, lat, tmp, n, d, c, m,
                               reverse, splat_order, splat_starts, stream);
}

int segdeep_lattice_filter_f64(const int64_t* index, const double* weight,
                               const int64_t* neighbors, const double* values, double* out,
                               double* lat, double* tmp, int64_t n, int d, int64_t c, int64_t m,
                               int reverse, const int64_t* splat_order,
                               const int64_t* splat_starts, void* stream) {
  return lattice_filter<double>(index, weight, neighbors, values, out, lat, tmp, n, d, c, m,
                                reverse, splat_order, splat_starts, stream);
}

int segdeep_band_pass_f32(const float* src, float* dst, const float* band, int64_t outer,
                          int64_t n, int64_t inner, int64_t width, void* stream) {
  return band_pass<float>(src, dst, band, outer, n, inner, width, stream);
}

int segdeep_band_pass_f64(const double* src, double* dst, const double* band, int64_t outer,
                          int64_t n, int64_t inner, int64_t width, void* stream) {
  return band_pass<double>(src, dst, band, outer, n, inner, width, stream);
}

}  // extern "C"
