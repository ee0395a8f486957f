/* SegDeep CRF kernel bodies, shared by the CUDA build (crf_kernels.cu) and the host build
 * (crf_kernels_host.cpp, the "cuda_emulated" backend run in CI).
 *
 * Each kernel is a function of its flat thread index p: the .cu launches it on the GPU, the host
 * build loops over p. Both therefore run the same lines of code. SEGDEEP_HD is
 * __host__ __device__ under nvcc and empty for a host compiler; the one atomic operation goes
 * through segdeep_atomic_add (atomicAdd on the device, a plain add on the host, whose loop is
 * serial). Plain C++ (no torch, no CUDA headers needed by the host compiler).
 *
 * Splat: `splat_atomic` (one thread per (point, vertex), float atomics: fast, summation order
 * set by the hardware) or `splat_sorted` (one thread per (vertex, channel), summing the vertex's
 * contributions in ascending (point, vertex) order from a stable sort of the index: a segmented
 * reduction, bit-identical run to run; the deterministic mode).
 */
#ifndef SEGDEEP_CRF_KERNEL_BODIES_H
#define SEGDEEP_CRF_KERNEL_BODIES_H

#include <stdint.h>

#if defined(__CUDACC__)
#define SEGDEEP_HD __host__ __device__
#else
#define SEGDEEP_HD
#endif

namespace segdeep_kernels {

template <typename T>
SEGDEEP_HD inline void segdeep_atomic_add(T* dst, T value) {
#if defined(__CUDA_ARCH__)
  atomicAdd(dst, value);
#else
  *dst += value;
#endif
}

// buf[p] = 0 for p < count.
template <typename T>
SEGDEEP_HD inline void fill_zero(int64_t p, T* buf) {
  buf[p] = T(0);
}

// p < n * (d + 1): lat[v * c + ch] += w * values[ch * n + i] for the p-th (point i, vertex v).
template <typename T>
SEGDEEP_HD inline void splat_atomic(int64_t p, const int64_t* index, const T* weight,
                                    const T* values, T* lat, int64_t n, int d, int64_t c) {
  const int64_t i = p / (d + 1);
  const int64_t v = index[p];
  const T w = weight[p];
  for (int64_t ch = 0; ch < c; ++ch) segdeep_atomic_add(lat + v * c + ch, w * values[ch * n + i]);
}

// p < (m + 1) * c: lat[p] = sum over the (point, vertex) pairs order[starts[v] .. starts[v+1])
// of vertex v = p / c, in that order; the extra vertex m is zero.
template <typename T>
SEGDEEP_HD inline void splat_sorted(int64_t p, const int64_t* order, const int64_t* starts,
                                    const T* weight, const T* values, T* lat, int64_t n, int d,
                                    int64_t c, int64_t m) {
  const int64_t v = p / c, ch = p % c;
  T s = T(0);
  if (v < m) {
    for (int64_t k = starts[v]; k < starts[v + 1]; ++k) {
      const int64_t q = order[k];
      s += weight[q] * values[ch * n + q / (d + 1)];
    }
  }
  lat[p] = s;
}

// p < (m + 1) * c: one blur step along a lattice direction with neighbours n1, n2 (m = missing).
template <typename T>
SEGDEEP_HD inline void blur(int64_t p, const int64_t* n1, const int64_t* n2, const T* src, T* dst,
                            int64_t m, int64_t c) {
  const int64_t v = p / c, ch = p % c;
  if (v == m) {
    dst[p] = T(0);
    return;
  }
  dst[p] = src[p] + T(0.5) * (src[n1[v] * c + ch] + src[n2[v] * c + ch]);
}

// p < n * c: out[ch * n + i] = sum_r weight[i, r] * lat[index[i, r] * c + ch].
template <typename T>
SEGDEEP_HD inline void slice(int64_t p, const int64_t* index, const T* weight, const T* lat,
                             T* out, int64_t n, int d, int64_t c) {
  const int64_t ch = p / n, i = p % n;
  T s = T(0);
  for (int r = 0; r <= d; ++r) s += weight[i * (d + 1) + r] * lat[index[i * (d + 1) + r] * c + ch];
  out[p] = s;
}

// p < outer * n * inner: one banded 1D pass along the middle axis of (outer, n, inner) arrays;
// band (n, width) holds the taps of each output row (width odd, centred).
template <typename T>
SEGDEEP_HD inline void band(int64_t p, const T* src, T* dst, const T* taps, int64_t n,
                            int64_t inner, int64_t width) {
  const int64_t q = p % inner;
  const int64_t i = (p / inner) % n;
  const int64_t o = p / (inner * n);
  const int64_t radius = (width - 1) / 2;
  const int64_t t0 = i < radius ? radius - i : 0;
  const int64_t t1 = (n - i + radius) < width ? (n - i + radius) : width;
  T s = T(0);
  for (int64_t t = t0; t < t1; ++t) s += taps[i * width + t] * src[(o * n + i + t - radius) * inner + q];
  dst[p] = s;
}

// Kernels as functors of the thread index (launched by the .cu, looped over by the host build).
template <typename T>
struct FillZeroK {
  T* buf;
  SEGDEEP_HD void operator()(int64_t p) const { fill_zero(p, buf); }
};

template <typename T>
struct SplatAtomicK {
  const int64_t* index;
  const T* weight;
  const T* values;
  T* lat;
  int64_t n;
  int d;
  int64_t c;
  SEGDEEP_HD void operator()(int64_t p) const { splat_atomic(p, index, weight, values, lat, n, d, c); }
};

template <typename T>
struct SplatSortedK {
  const int64_t* order;
  const int64_t* starts;
  const T* weight;
  const T* values;
  T* lat;
  int64_t n;
  int d;
  int64_t c, m;
  SEGDEEP_HD void operator()(int64_t p) const {
    splat_sorted(p, order, starts, weight, values, lat, n, d, c, m);
  }
};

template <typename T>
struct BlurK {
  const int64_t* n1;
  const int64_t* n2;
  const T* src;
  T* dst;
  int64_t m, c;
  SEGDEEP_HD void operator()(int64_t p) const { blur(p, n1, n2, src, dst, m, c); }
};

template <typename T>
struct SliceK {
  const int64_t* index;
  const T* weight;
  const T* lat;
  T* out;
  int64_t n;
  int d;
  int64_t c;
  SEGDEEP_HD void operator()(int64_t p) const { slice(p, index, weight, lat, out, n, d, c); }
};

template <typename T>
struct BandK {
  const T* src;
  T* dst;
  const T* taps;
  int64_t n, inner, width;
  SEGDEEP_HD void operator()(int64_t p) const { band(p, src, dst, taps, n, inner, width); }
};

// The kernel sequence of one lattice filtering, for a launcher with
// `template <class F> void operator()(int64_t count, const F& kernel)` (count threads, in stream
// order) and `int status()` (0 or the first error). order/starts: the sorted splat when non-null.
template <typename T, typename Launch>
int lattice_filter_steps(Launch& launch, const int64_t* index, const T* weight,
                         const int64_t* neighbors, const T* values, T* out, T* lat, T* tmp,
                         int64_t n, int d, int64_t c, int64_t m, int reverse,
                         const int64_t* order, const int64_t* starts) {
  const int64_t verts = (m + 1) * c;
  if (order != 0 && starts != 0) {
    launch(verts, SplatSortedK<T>{order, starts, weight, values, lat, n, d, c, m});
  } else {
    launch(verts, FillZeroK<T>{lat});
    launch(n * (d + 1), SplatAtomicK<T>{index, weight, values, lat, n, d, c});
  }
  for (int step = 0; step <= d; ++step) {
    const int j = reverse ? d - step : step;
    const int64_t* n1 = neighbors + static_cast<int64_t>(j) * 2 * m;
    launch(verts, BlurK<T>{n1, n1 + m, lat, tmp, m, c});
    T* swap = lat;
    lat = tmp;
    tmp = swap;
  }
  launch(n * c, SliceK<T>{index, weight, lat, out, n, d, c});
  return launch.status();
}

// One banded pass along the middle axis of a contiguous (outer, n, inner) array.
template <typename T, typename Launch>
int band_pass_steps(Launch& launch, const T* src, T* dst, const T* taps, int64_t outer, int64_t n,
                    int64_t inner, int64_t width) {
  launch(outer * n * inner, BandK<T>{src, dst, taps, n, inner, width});
  return launch.status();
}

}  // namespace segdeep_kernels

#endif
