// Depthwise FP32 convolution for AVX2 (see F32DepthwiseArgs): the AVX-512 kernel's generic path
// on 8-lane vectors. NHWC: a ymm holds 8 channels of one pixel; a tile of 4 output pixels x 16
// channels (two vectors) reuses each weight vector 4 times; padding is handled by skipping taps
// outside the image (no padded copy). Bias + clamp fused. (Without it, depthwise convs ran on
// the implicit-GEMM path one channel at a time: 0.07x oneDNN on Zen 3.)
#include <immintrin.h>

#include "epilogue_avx2.h"
#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace avx2 {
namespace {

constexpr int kPixels = 4;
constexpr int kVectors = 2;  // 16 channels per tile

__m256i lane_mask(int64_t valid) {
  const int v = valid > 8 ? 8 : (valid < 0 ? 0 : static_cast<int>(valid));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(v), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Output pixels ow0 .. ow0 + P of row (n, oh), channels c .. c + 16 (`valid` of them, masked
// loads and stores past C). Taps outside the image contribute nothing; INTERIOR tiles (every
// tap inside) skip the checks.
template <int P, bool INTERIOR>
void tile(const F32DepthwiseArgs& a, const float* image, float* out_row, int64_t oh, int64_t ow0,
          int64_t c, int64_t valid) {
  // Locals, not a.<field>: the stores below go through float* and would force reloads.
  const int64_t C = a.C, H = a.H, W = a.W, KH = a.KH, KW = a.KW;
  const int64_t pixel_step = a.stride_w * C, tap_step = a.dil_w * C;
  const float* weight = a.weight + c;
  const __m256i mask[kVectors] = {lane_mask(valid), lane_mask(valid - 8)};
  const bool full = valid >= 8 * kVectors;
  const auto load = [&](const float* p, int v) {
    return full ? _mm256_loadu_ps(p + 8 * v) : _mm256_maskload_ps(p + 8 * v, mask[v]);
  };
  __m256 acc[P][kVectors];
  for (int j = 0; j < P; ++j) {
    for (int v = 0; v < kVectors; ++v) acc[j][v] = _mm256_setzero_ps();
  }
  const int64_t ih0 = oh * a.stride_h - a.pad_top, iw0 = ow0 * a.stride_w - a.pad_left;
  for (int64_t kh = 0; kh < KH; ++kh) {
    const int64_t ih = ih0 + kh * a.dil_h;
    if (!INTERIOR && (ih < 0 || ih >= H)) continue;
    const float* src = image + (ih * W + iw0) * C + c;
    for (int64_t kw = 0; kw < KW; ++kw, src += tap_step) {
      const float* wp = weight + (kh * KW + kw) * C;
      const __m256 w0 = load(wp, 0), w1 = load(wp, 1);
      for (int j = 0; j < P; ++j) {
        if (!INTERIOR) {
          const int64_t iw = iw0 + kw * a.dil_w + j * a.stride_w;
          if (iw < 0 || iw >= W) continue;
        }
        acc[j][0] = _mm256_fmadd_ps(load(src + j * pixel_step, 0), w0, acc[j][0]);
        acc[j][1] = _mm256_fmadd_ps(load(src + j * pixel_step, 1), w1, acc[j][1]);
      }
    }
  }
  const Epilogue256 epi(a.clamp_min, a.clamp_max);
  const __m256 bias[kVectors] = {Epilogue256::load_bias(a.bias, c, mask[0]),
                                 Epilogue256::load_bias(a.bias, c + 8, mask[1])};
  for (int j = 0; j < P; ++j) {
    float* dst = out_row + (ow0 + j) * C + c;
    for (int v = 0; v < kVectors; ++v) {
      const __m256 y = epi.apply(acc[j][v], bias[v]);
      store_lanes(dst + 8 * v, y, static_cast<int>(valid - 8 * v));
    }
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
        for (int64_t c = 0; c < a.C; c += 8 * kVectors) {
          if (interior) {
            tile<kPixels, true>(a, image, out_row, oh, ow, c, a.C - c);
          } else {
            tile<kPixels, false>(a, image, out_row, oh, ow, c, a.C - c);
          }
        }
      }
      for (; ow < a.OW; ++ow) {
        for (int64_t c = 0; c < a.C; c += 8 * kVectors) {
          tile<1, false>(a, image, out_row, oh, ow, c, a.C - c);
        }
      }
    }
  });
}

}  // namespace avx2
}  // namespace pyfastcnn
