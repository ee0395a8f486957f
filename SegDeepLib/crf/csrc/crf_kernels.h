/* SegDeep CRF CUDA kernels: a plain C interface (no torch headers), so that nvcc alone can
 * compile crf_kernels.cu. All sizes and offsets are int64. Pointers are device pointers; lat and
 * tmp are scratch buffers of (m + 1) * c elements; stream is a cudaStream_t (or NULL).
 * Each function returns a cudaError_t value (0 = success). */
#ifndef SEGDEEP_CRF_KERNELS_H
#define SEGDEEP_CRF_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int segdeep_lattice_filter_f32(const int64_t* index, const float* weight, const int64_t* neighbors,
                               const float* values, float* out, float* lat, float* tmp, int64_t n,
                               int d, int64_t c, int64_t m, int reverse, void* stream);
int segdeep_lattice_filter_f64(const int64_t* index, const double* weight,
                               const int64_t* neighbors, const double* values, double* out,
                               double* lat, double* tmp, int64_t n, int d, int64_t c, int64_t m,
                               int reverse, void* stream);
/* One banded 1D pass along the middle axis of a contiguous (outer, n, inner) array. */
int segdeep_band_pass_f32(const float* src, float* dst, const float* band, int64_t outer,
                          int64_t n, int64_t inner, int64_t width, void* stream);
int segdeep_band_pass_f64(const double* src, double* dst, const double* band, int64_t outer,
                          int64_t n, int64_t inner, int64_t width, void* stream);

#ifdef __cplusplus
}
#endif

#endif
