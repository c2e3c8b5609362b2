// Depthwise FP32 convolution for AVX-512 (see F32DepthwiseArgs). NHWC: a zmm holds 16 channels
// of one pixel; a tile of 4 output pixels x 16 channels reuses each weight vector 4 times;
// padding is handled by skipping taps outside the image (no padded copy of the input).
// Memory-bound by nature (one input load per FMA); bias + clamp fused.
// GCC 12 warns that _mm512_undefined_*() in its own headers is uninitialized (fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace avx512 {
namespace {

constexpr int kPixels = 4;

__mmask16 lane_mask(int64_t valid) {
  return valid >= 16 ? static_cast<__mmask16>(0xFFFF)
                     : (valid <= 0 ? 0 : static_cast<__mmask16>((1u << valid) - 1));
}

// Output pixels ow0 .. ow0 + P of row (n, oh), channels c .. c + 16 (masked). Taps outside
// the image contribute nothing; INTERIOR tiles (every tap inside) skip the checks.
template <int P, bool INTERIOR>
void tile(const F32DepthwiseArgs& a, const float* image, float* out_row, int64_t oh, int64_t ow0,
          int64_t c, __mmask16 mask) {
  // Locals, not a.<field>: the stores below go through void* and would force reloads.
  const int64_t C = a.C, H = a.H, W = a.W, KH = a.KH, KW = a.KW;
  const int64_t pixel_step = a.stride_w * C, tap_step = a.dil_w * C;
  const float* weight = a.weight + c;
  __m512 acc[P];
  for (int j = 0; j < P; ++j) acc[j] = _mm512_setzero_ps();
  const int64_t ih0 = oh * a.stride_h - a.pad_top, iw0 = ow0 * a.stride_w - a.pad_left;
  for (int64_t kh = 0; kh < KH; ++kh) {
    const int64_t ih = ih0 + kh * a.dil_h;
    if (!INTERIOR && (ih < 0 || ih >= H)) continue;
    const float* src = image + (ih * W + iw0) * C + c;
    for (int64_t kw = 0; kw < KW; ++kw, src += tap_step) {
      const __m512 w = _mm512_maskz_loadu_ps(mask, weight + (kh * KW + kw) * C);
      for (int j = 0; j < P; ++j) {
        if (!INTERIOR) {
          const int64_t iw = iw0 + kw * a.dil_w + j * a.stride_w;
          if (iw < 0 || iw >= W) continue;
        }
        acc[j] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, src + j * pixel_step), w, acc[j]);
      }
    }
  }
  const __m512 bias = a.bias ? _mm512_maskz_loadu_ps(mask, a.bias + c) : _mm512_setzero_ps();
  const __m512 lo = _mm512_set1_ps(a.clamp_min), hi = _mm512_set1_ps(a.clamp_max);
  for (int j = 0; j < P; ++j) {
    // x as the second operand of max/min: they return it when it is NaN.
    const __m512 y = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(acc[j], bias)));
    _mm512_mask_storeu_ps(out_row + (ow0 + j) * C + c, mask, y);
  }
}

}  // namespace

void depthwise_f32(const F32DepthwiseArgs& a) {
  parallel_for(a.N * a.OH, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / a.OH, oh = row % a.OH;
      const float* image = a.src + n * a.H * a.W * a.C;
      float* out_row = a.out + row * a.OW * a.C;
      const int64_t ih_first = oh * a.stride_h - a.pad_top;
      const bool rows_inside = ih_first >= 0 && ih_first + (a.KH - 1) * a.dil_h < a.H;
      // Pixel tiles outermost: a tile's input pixels (all channels) stay in L1 while every
      // 16-channel block uses them.
      int64_t ow = 0;
      for (; ow + kPixels <= a.OW; ow += kPixels) {
        const int64_t iw_first = ow * a.stride_w - a.pad_left;
        const int64_t iw_last =
            (ow + kPixels - 1) * a.stride_w - a.pad_left + (a.KW - 1) * a.dil_w;
        const bool interior = rows_inside && iw_first >= 0 && iw_last < a.W;
        for (int64_t c = 0; c < a.C; c += 16) {
          const __mmask16 mask = lane_mask(a.C - c);
          if (interior) {
            tile<kPixels, true>(a, image, out_row, oh, ow, c, mask);
          } else {
            tile<kPixels, false>(a, image, out_row, oh, ow, c, mask);
          }
        }
      }
      for (; ow < a.OW; ++ow) {
        for (int64_t c = 0; c < a.C; c += 16) {
          tile<1, false>(a, image, out_row, oh, ow, c, lane_mask(a.C - c));
        }
      }
    }
  });
}

}  // namespace avx512
}  // namespace pyfastcnn
