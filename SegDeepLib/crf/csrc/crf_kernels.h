/* SegDeep CRF kernels: a plain C interface (no torch headers), implemented twice from the same
 * kernel bodies (crf_kernel_bodies.h): by crf_kernels.cu on the GPU (nvcc alone compiles it) and
 * by crf_kernels_host.cpp on the host (g++ alone; the "cuda_emulated" backend). All sizes and
 * offsets are int64. Pointers are device pointers for the CUDA build, host pointers for the host
 * build; lat and tmp are scratch buffers of (m + 1) * c elements; stream is a cudaStream_t (or
 * NULL; ignored by the host build). splat_order (n * (d + 1)) and splat_starts (m + 1), when both
 * are non-NULL, select the deterministic sorted splat: splat_order is a stable argsort of index
 * and splat_starts[v] the first position of vertex v in it (splat_starts[m] = n * (d + 1)).
 * Each function returns a cudaError_t value (0 = success). */
#ifndef SEGDEEP_CRF_KERNELS_H
#define SEGDEEP_CRF_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int segdeep_lattice_filter_f32(const int64_t* index, const float* weight, const int64_t* neighbors,
                               const float* values, float* out, float* lat, float* tmp, int64_t n,
                               int d, int64_t c, int64_t m, int reverse,
                               const int64_t* splat_order, const int64_t* splat_starts,
                               void* stream);
int segdeep_lattice_filter_f64(const int64_t* index, const double* weight,
                               const int64_t* neighbors, const double* values, double* out,
                               double* lat, double* tmp, int64_t n, int d, int64_t c, int64_t m,
                               int reverse, const int64_t* splat_order,
                               const int64_t* splat_starts, void* stream);
/* One banded 1D pass along the middle axis of a contiguous (outer, n, inner) array. */
int segdeep_band_pass_f32(const float* src, float* dst, const float* band, int64_t outer,
                          int64_t n, int64_t inner, int64_t width, void* stream);
int segdeep_band_pass_f64(const double* src, double* dst, const double* band, int64_t outer,
                          int64_t n, int64_t inner, int64_t width, void* stream);

#ifdef __cplusplus
}
#endif

#endif
