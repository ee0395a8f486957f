// SegDeep CRF CUDA kernels (permutohedral lattice splat / blur / slice and banded separable
// passes). Plain CUDA C++: no torch headers, compiled by nvcc alone (see crf_kernels.h).
#include <cuda_runtime.h>

#include "crf_kernels.h"

namespace {

constexpr int kThreads = 256;

inline int64_t blocks_for(int64_t work) { return (work + kThreads - 1) / kThreads; }

template <typename T>
__global__ void fill_zero(T* buf, int64_t count) {
  int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p < count) buf[p] = T(0);
}

// One thread per (point, vertex): lat[v * c + ch] += w * values[ch * n + i] (float atomics).
template <typename T>
__global__ void splat_kernel(const int64_t* index, const T* weight, const T* values, T* lat,
                             int64_t n, int d, int64_t c) {
  int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= n * (d + 1)) return;
  const int64_t i = p / (d + 1);
  const int64_t v = index[p];
  const T w = weight[p];
  for (int64_t ch = 0; ch < c; ++ch) atomicAdd(lat + v * c + ch, w * values[ch * n + i]);
}

template <typename T>
__global__ void blur_kernel(const int64_t* n1, const int64_t* n2, const T* src, T* dst, int64_t m,
                            int64_t c) {
  int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= (m + 1) * c) return;
  const int64_t v = p / c, ch = p % c;
  if (v == m) {
    dst[p] = T(0);
    return;
  }
  dst[p] = src[p] + T(0.5) * (src[n1[v] * c + ch] + src[n2[v] * c + ch]);
}

template <typename T>
__global__ void slice_kernel(const int64_t* index, const T* weight, const T* lat, T* out,
                             int64_t n, int d, int64_t c) {
  int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= n * c) return;
  const int64_t ch = p / n, i = p % n;
  T s = T(0);
  for (int r = 0; r <= d; ++r) s += weight[i * (d + 1) + r] * lat[index[i * (d + 1) + r] * c + ch];
  out[p] = s;
}

template <typename T>
int lattice_filter(const int64_t* index, const T* weight, const int64_t* neighbors,
                   const T* values, T* out, T* lat, T* tmp, int64_t n, int d, int64_t c,
                   int64_t m, int reverse, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const int64_t verts = (m + 1) * c;
  fill_zero<T><<<blocks_for(verts), kThreads, 0, stream>>>(lat, verts);
  splat_kernel<T><<<blocks_for(n * (d + 1)), kThreads, 0, stream>>>(index, weight, values, lat,
                                                                    n, d, c);
  for (int step = 0; step <= d; ++step) {
    const int j = reverse ? d - step : step;
    const int64_t* n1 = neighbors + static_cast<int64_t>(j) * 2 * m;
    blur_kernel<T><<<blocks_for(verts), kThreads, 0, stream>>>(n1, n1 + m, lat, tmp, m, c);
    T* swap = lat;
    lat = tmp;
    tmp = swap;
  }
  slice_kernel<T><<<blocks_for(n * c), kThreads, 0, stream>>>(index, weight, lat, out, n, d, c);
  return static_cast<int>(cudaGetLastError());
}

// One thread per output element of a (outer, n, inner) array.
template <typename T>
__global__ void band_kernel(const T* src, T* dst, const T* band, int64_t outer, int64_t n,
                            int64_t inner, int64_t width) {
  int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= outer * n * inner) return;
  const int64_t q = p % inner;
  const int64_t i = (p / inner) % n;
  const int64_t o = p / (inner * n);
  const int64_t radius = (width - 1) / 2;
  const int64_t t0 = i < radius ? radius - i : 0;
  const int64_t t1 = (n - i + radius) < width ? (n - i + radius) : width;
  T s = T(0);
  for (int64_t t = t0; t < t1; ++t) s += band[i * width + t] * src[(o * n + i + t - radius) * inner + q];
  dst[p] = s;
}

template <typename T>
int band_pass(const T* src, T* dst, const T* band, int64_t outer, int64_t n, int64_t inner,
              int64_t width, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  band_kernel<T><<<blocks_for(outer * n * inner), kThreads, 0, stream>>>(src, dst, band, outer, n,
                                                                        inner, width);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

extern "C" {

int segdeep_lattice_filter_f32(const int64_t* index, const float* weight, const int64_t* neighbors,
                               const float* values, float* out, float* lat, float* tmp, int64_t n,
                               int d, int64_t c, int64_t m, int reverse, void* stream) {
  return lattice_filter<float>(index, weight, neighbors, values, out, lat, tmp, n, d, c, m,
                               reverse, stream);
}

int segdeep_lattice_filter_f64(const int64_t* index, const double* weight,
                               const int64_t* neighbors, const double* values, double* out,
                               double* lat, double* tmp, int64_t n, int d, int64_t c, int64_t m,
                               int reverse, void* stream) {
  return lattice_filter<double>(index, weight, neighbors, values, out, lat, tmp, n, d, c, m,
                                reverse, stream);
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
