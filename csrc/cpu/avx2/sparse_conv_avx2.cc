// Sparse (pruned-weight) convolution for AVX2+FMA over virtual output planes: the AVX-512
// kernel's scheme (see SparsePlanesArgs) with 8 ymm accumulators per 64-pixel tile.
#include <immintrin.h>

#include "pyfastcnn/kernels.h"
#include "../tile_loop.h"
#include "epilogue_avx2.h"

namespace pyfastcnn {
namespace avx2 {
namespace {

constexpr int64_t kTile = 64;
constexpr int kVectors = 8;

void tile(const SparsePlanesArgs& a, const float* src, float* out, int64_t q0, int64_t oc_begin,
          int64_t oc_end) {
  const int64_t left = a.q_count - q0;
  __m256i mask[kVectors];
  for (int v = 0; v < kVectors; ++v) {
    mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left - 8 * v)),
                                 _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  const bool full = left >= kTile;
  const Epilogue256 epi(a.clamp_min, a.clamp_max);
  const float* base = src + q0;
  for (int64_t oc = oc_begin; oc < oc_end; ++oc) {
    __m256 c[kVectors];
    for (int v = 0; v < kVectors; ++v) c[v] = _mm256_setzero_ps();
    for (int64_t i = a.row_ptr[oc]; i < a.row_ptr[oc + 1]; ++i) {
      const float* p = base + a.offset[i];
      const __m256 w = _mm256_set1_ps(a.values[i]);
      if (full) {
        for (int v = 0; v < kVectors; ++v) c[v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(p + 8 * v), c[v]);
      } else {
        for (int v = 0; v < kVectors; ++v) {
          c[v] = _mm256_fmadd_ps(w, _mm256_maskload_ps(p + 8 * v, mask[v]), c[v]);
        }
      }
    }
    const __m256 bias = Epilogue256::broadcast_bias(a.bias, oc);
    float* o = out + oc * a.q_count + q0;
    for (int v = 0; v < kVectors; ++v) {
      _mm256_maskstore_ps(o + 8 * v, mask[v], epi.apply(c[v], bias));
    }
  }
}

}  // namespace

void sparse_conv_planes(const SparsePlanesArgs& a) {
  for_each_pixel_tile(a.N, a.q_count, kTile, a.OC,
                      [&](int64_t n, int64_t q0, int64_t oc_begin, int64_t oc_end) {
                        tile(a, a.src + n * a.image_stride, a.out + n * a.OC * a.q_count, q0,
                             oc_begin, oc_end);
                      });
}

}  // namespace avx2
}  // namespace pyfastcnn
