// SegDeep CRF kernels on the host: the same C interface as crf_kernels.cu (crf_kernels.h), from
// the same kernel bodies (crf_kernel_bodies.h), each "launch" a serial loop over the thread
// indices. Compiled by a plain C++ compiler (no CUDA, no torch): the "cuda_emulated" CRF backend,
// which lets CI run the lines of code the GPU runs.
//
// segdeep_host_set_launch_order(seed) makes every launch visit its indices in a seeded
// permutation instead of 0, 1, 2, ... (seed 0): like GPU threads, no kernel may depend on the
// order, and only the atomic splat's float sums do (which the deterministic sorted splat fixes).
#include <stdint.h>

#include <atomic>

#include "crf_kernel_bodies.h"
#include "crf_kernels.h"

namespace {

std::atomic<uint64_t> g_launch_seed{0};

uint64_t gcd(uint64_t a, uint64_t b) {
  while (b != 0) {
    const uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

struct HostLaunch {
  uint64_t seed = g_launch_seed.load();

  template <typename F>
  void operator()(int64_t count, const F& kernel) {
    if (count <= 0) return;
    if (seed == 0) {
      for (int64_t p = 0; p < count; ++p) kernel(p);
      return;
    }
    // p -> (a * p + b) mod count with gcd(a, count) = 1 is a permutation of 0 .. count-1.
    const uint64_t size = static_cast<uint64_t>(count);
    uint64_t a = (seed * 0x9E3779B97F4A7C15ull) % size;
    if (a == 0) a = 1;
    while (gcd(a, size) != 1) a = a + 1 == size ? 1 : a + 1;
    const uint64_t b = (seed * 0xBF58476D1CE4E5B9ull) % size;
    uint64_t q = b;
    for (uint64_t k = 0; k < size; ++k) {
      kernel(static_cast<int64_t>(q));
      q = (q + a) % size;
    }
  }
  int status() const { return 0; }
};

}  // namespace

extern "C" {

void segdeep_host_set_launch_order(uint64_t seed) { g_launch_seed.store(seed); }

int segdeep_lattice_filter_f32(const int64_t* index, const float* weight, const int64_t* neighbors,
                               const float* values, float* out, float* lat, float* tmp, int64_t n,
                               int d, int64_t c, int64_t m, int reverse,
                               const int64_t* splat_order, const int64_t* splat_starts,
                               void* /*stream*/) {
  HostLaunch launch;
  return segdeep_kernels::lattice_filter_steps<float>(launch, index, weight, neighbors, values,
                                                      out, lat, tmp, n, d, c, m, reverse,
                                                      splat_order, splat_starts);
}

int segdeep_lattice_filter_f64(const int64_t* index, const double* weight,
                               const int64_t* neighbors, const double* values, double* out,
                               double* lat, double* tmp, int64_t n, int d, int64_t c, int64_t m,
                               int reverse, const int64_t* splat_order,
                               const int64_t* splat_starts, void* /*stream*/) {
  HostLaunch launch;
  return segdeep_kernels::lattice_filter_steps<double>(launch, index, weight, neighbors, values,
                                                       out, lat, tmp, n, d, c, m, reverse,
                                                       splat_order, splat_starts);
}

int segdeep_band_pass_f32(const float* src, float* dst, const float* band, int64_t outer,
                          int64_t n, int64_t inner, int64_t width, void* /*stream*/) {
  HostLaunch launch;
  return segdeep_kernels::band_pass_steps<float>(launch, src, dst, band, outer, n, inner, width);
}

int segdeep_band_pass_f64(const double* src, double* dst, const double* band, int64_t outer,
                          int64_t n, int64_t inner, int64_t width, void* /*stream*/) {
  HostLaunch launch;
  return segdeep_kernels::band_pass_steps<double>(launch, src, dst, band, outer, n, inner, width);
}

}  // extern "C"
