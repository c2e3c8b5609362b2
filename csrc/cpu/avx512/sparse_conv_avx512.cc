// Sparse (pruned-weight) convolution for AVX-512 over virtual output planes (see
// SparsePlanesArgs). A task owns 64 consecutive virtual pixels of one image for every output
// channel: each non-zero weight is one broadcast and four contiguous 16-pixel loads + FMAs, so
// work is proportional to the non-zeros, and the task's input window stays in L2 while all
// output channels use it. Bias and clamp (ReLU) are applied before the store.
// GCC 12 warns that _mm512_undefined_*() in its own headers is uninitialized (fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "pyfastcnn/kernels.h"
#include "../tile_loop.h"
#include "epilogue_avx512.h"

namespace pyfastcnn {
namespace avx512 {
namespace {

constexpr int64_t kTile = 64;  // virtual pixels per task: 4 zmm accumulators

__mmask16 lane_mask(int64_t valid) {
  return valid >= 16 ? static_cast<__mmask16>(0xFFFF)
                     : (valid <= 0 ? 0 : static_cast<__mmask16>((1u << valid) - 1));
}

template <bool FULL>
void tile(const SparsePlanesArgs& a, const float* src, float* out, int64_t q0, int64_t oc_begin,
          int64_t oc_end) {
  const int64_t left = a.q_count - q0;
  const __mmask16 m0 = lane_mask(left), m1 = lane_mask(left - 16), m2 = lane_mask(left - 32),
                  m3 = lane_mask(left - 48);
  const Epilogue512 epi(a.clamp_min, a.clamp_max);
  const float* base = src + q0;
  for (int64_t oc = oc_begin; oc < oc_end; ++oc) {
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (int64_t i = a.row_ptr[oc]; i < a.row_ptr[oc + 1]; ++i) {
      const float* p = base + a.offset[i];
      const __m512 v = _mm512_set1_ps(a.values[i]);
      if constexpr (FULL) {
        c0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p), c0);
        c1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p + 16), c1);
        c2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p + 32), c2);
        c3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p + 48), c3);
      } else {
        c0 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m0, p), c0);
        c1 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m1, p + 16), c1);
        c2 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m2, p + 32), c2);
        c3 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m3, p + 48), c3);
      }
    }
    const __m512 bias = Epilogue512::broadcast_bias(a.bias, oc);
    float* o = out + oc * a.q_count + q0;
    _mm512_mask_storeu_ps(o, m0, epi.apply(c0, bias));
    _mm512_mask_storeu_ps(o + 16, m1, epi.apply(c1, bias));
    _mm512_mask_storeu_ps(o + 32, m2, epi.apply(c2, bias));
    _mm512_mask_storeu_ps(o + 48, m3, epi.apply(c3, bias));
  }
}

}  // namespace

void sparse_conv_planes(const SparsePlanesArgs& a) {
  for_each_pixel_tile(a.N, a.q_count, kTile, a.OC,
                      [&](int64_t n, int64_t q0, int64_t oc_begin, int64_t oc_end) {
                        const float* src = a.src + n * a.image_stride;
                        float* out = a.out + n * a.OC * a.q_count;
                        if (q0 + kTile <= a.q_count) {
                          tile<true>(a, src, out, q0, oc_begin, oc_end);
                        } else {
                          tile<false>(a, src, out, q0, oc_begin, oc_end);
                        }
                      });
}

}  // namespace avx512
}  // namespace pyfastcnn
