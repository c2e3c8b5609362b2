// Depthwise FP32 convolution for AVX-512 (see F32DepthwiseArgs). NHWC: a zmm holds 16 channels
// of one pixel; a tile of 4 output pixels x 16 channels reuses each weight vector 4 times;
// padding is handled by skipping taps outside the image (no padded copy of the input).
// Memory-bound by nature (one input load per FMA); bias + clamp fused.
// GCC 12 warns that _mm512_undefined_*() in its own headers is uninitialized (fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "epilogue_avx512.h"
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
  const __m512 bias = Epilogue512::load_bias(a.bias, c, mask);
  const Epilogue512 epi(a.clamp_min, a.clamp_max);
  for (int j = 0; j < P; ++j) {
    _mm512_mask_storeu_ps(out_row + (ow0 + j) * C + c, mask, epi.apply(acc[j], bias));
  }
}


// ---- 3x3, dilation 1, stride 1 or 2: the MobileNet case -----------------------------------
// One pass over input and output: each task owns contiguous output rows; a row's three input
// rows (at most 3 * W * C floats) stay in L2 while it is computed, and the input rows the next
// output row adds are prefetched while this one runs (the hardware prefetchers alone left the
// large batch-8 layers at a fraction of the memory bandwidth). Tiles of 4 output pixels x 16
// channels load each input vector of a row once (6 vectors at stride 1, 9 at stride 2) and use
// it for every tap that needs it. Rows outside the image are skipped by `rows` (bit kh set:
// kernel row kh is inside), columns outside by handling edge pixels one at a time.

#define DW_LD(MASKED, p) (MASKED ? _mm512_maskz_loadu_ps(mask, (p)) : _mm512_loadu_ps(p))
#define DW_FMA(acc, x, w) acc = _mm512_fmadd_ps((x), (w), acc)

// Kernel row kh of a stride-1 tile: output j takes input j + kw.
#define DW_ROW_S1(src, wk)                                                            \
  do {                                                                                \
    const __m512 w0 = DW_LD(MASKED, (wk)), w1 = DW_LD(MASKED, (wk) + C),             \
                 w2 = DW_LD(MASKED, (wk) + 2 * C);                                   \
    const __m512 x0 = DW_LD(MASKED, (src)), x1 = DW_LD(MASKED, (src) + C),           \
                 x2 = DW_LD(MASKED, (src) + 2 * C), x3 = DW_LD(MASKED, (src) + 3 * C), \
                 x4 = DW_LD(MASKED, (src) + 4 * C), x5 = DW_LD(MASKED, (src) + 5 * C); \
    DW_FMA(a0, x0, w0); DW_FMA(a1, x1, w0); DW_FMA(a2, x2, w0); DW_FMA(a3, x3, w0);   \
    DW_FMA(a0, x1, w1); DW_FMA(a1, x2, w1); DW_FMA(a2, x3, w1); DW_FMA(a3, x4, w1);   \
    DW_FMA(a0, x2, w2); DW_FMA(a1, x3, w2); DW_FMA(a2, x4, w2); DW_FMA(a3, x5, w2);   \
  } while (0)

// Stride 2: output j takes input 2j + kw.
#define DW_ROW_S2(src, wk)                                                            \
  do {                                                                                \
    const __m512 w0 = DW_LD(MASKED, (wk)), w1 = DW_LD(MASKED, (wk) + C),             \
                 w2 = DW_LD(MASKED, (wk) + 2 * C);                                   \
    const __m512 x0 = DW_LD(MASKED, (src)), x1 = DW_LD(MASKED, (src) + C),           \
                 x2 = DW_LD(MASKED, (src) + 2 * C), x3 = DW_LD(MASKED, (src) + 3 * C), \
                 x4 = DW_LD(MASKED, (src) + 4 * C), x5 = DW_LD(MASKED, (src) + 5 * C), \
                 x6 = DW_LD(MASKED, (src) + 6 * C), x7 = DW_LD(MASKED, (src) + 7 * C), \
                 x8 = DW_LD(MASKED, (src) + 8 * C);                                  \
    DW_FMA(a0, x0, w0); DW_FMA(a1, x2, w0); DW_FMA(a2, x4, w0); DW_FMA(a3, x6, w0);   \
    DW_FMA(a0, x1, w1); DW_FMA(a1, x3, w1); DW_FMA(a2, x5, w1); DW_FMA(a3, x7, w1);   \
    DW_FMA(a0, x2, w2); DW_FMA(a1, x4, w2); DW_FMA(a2, x6, w2); DW_FMA(a3, x8, w2);   \
  } while (0)

#define DW_STORE(MASKED, p, acc)                                                          \
  do {                                                                                    \
    const __m512 y_ = epi.apply((acc), bias);                                             \
    if (MASKED) {                                                                         \
      _mm512_mask_storeu_ps((p), mask, y_);                                               \
    } else {                                                                              \
      _mm512_storeu_ps((p), y_);                                                          \
    }                                                                                     \
  } while (0)

struct DwRow {
  const float* in[3];  // input row kh at column iw = 0 (valid where rows has bit kh)
  int rows;
  float* out;          // output row at ow = 0
};

// Four interior output pixels starting at input column iw0 (all nine taps' columns inside).
template <int S, bool MASKED>
inline void dw3_tile4(const DwRow& r, const float* weight, const float* bias_p, int64_t C,
                      int64_t iw0, int64_t ow0, int64_t c, __mmask16 mask,
                      const Epilogue512& epi) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int kh = 0; kh < 3; ++kh) {
    if (!(r.rows >> kh & 1)) continue;
    const float* src = r.in[kh] + iw0 * C + c;
    const float* wk = weight + kh * 3 * C + c;
    if (S == 1) {
      DW_ROW_S1(src, wk);
    } else {
      DW_ROW_S2(src, wk);
    }
  }
  const __m512 bias = MASKED ? Epilogue512::load_bias(bias_p, c, mask)
                             : Epilogue512::load_bias(bias_p, c);
  float* dst = r.out + ow0 * C + c;
  DW_STORE(MASKED, dst, a0);
  DW_STORE(MASKED, dst + C, a1);
  DW_STORE(MASKED, dst + 2 * C, a2);
  DW_STORE(MASKED, dst + 3 * C, a3);
}

// One output pixel, any column (taps outside the image skipped), all channel blocks.
inline void dw3_pixel(const DwRow& r, const float* weight, const float* bias_p, int64_t C,
                      int64_t W, int64_t iw0, int64_t ow, const Epilogue512& epi) {
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 mask = lane_mask(C - c);
    __m512 acc = _mm512_setzero_ps();
    for (int kh = 0; kh < 3; ++kh) {
      if (!(r.rows >> kh & 1)) continue;
      for (int kw = 0; kw < 3; ++kw) {
        const int64_t iw = iw0 + kw;
        if (iw < 0 || iw >= W) continue;
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, r.in[kh] + iw * C + c),
                              _mm512_maskz_loadu_ps(mask, weight + (kh * 3 + kw) * C + c), acc);
      }
    }
    const __m512 bias = Epilogue512::load_bias(bias_p, c, mask);
    DW_STORE(true, r.out + ow * C + c, acc);
  }
}

// Prefetches input floats [begin, end) of a row into L2 (one line at a time).
inline void dw_prefetch(const float* begin, const float* end) {
  for (const char* p = reinterpret_cast<const char*>(begin);
       p < reinterpret_cast<const char*>(end); p += 64) {
    _mm_prefetch(p, _MM_HINT_T1);
  }
}

template <int S>
void dw3_rows(const F32DepthwiseArgs& a, int64_t row_begin, int64_t row_end, bool prefetch) {
  const int64_t C = a.C, H = a.H, W = a.W, OH = a.OH, OW = a.OW;
  const int64_t pad_top = a.pad_top, pad_left = a.pad_left;
  const float* weight = a.weight;
  const float* bias_p = a.bias;
  const Epilogue512 epi(a.clamp_min, a.clamp_max);
  const int64_t C_full = C / 16 * 16;
  const __mmask16 tail_mask = lane_mask(C - C_full);
  // Interior output columns: ow_lo <= ow < ow_hi has every tap column inside.
  int64_t ow_lo = (pad_left + S - 1) / S;
  int64_t ow_hi = W - 3 + pad_left >= 0 ? (W - 3 + pad_left) / S + 1 : 0;
  if (ow_lo > OW) ow_lo = OW;
  if (ow_hi > OW) ow_hi = OW;
  if (ow_hi < ow_lo) ow_hi = ow_lo;
  const int64_t row_floats = W * C;
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t n = row / OH, oh = row % OH;
    const float* image = a.src + n * H * row_floats;
    DwRow r;
    r.rows = 0;
    const int64_t ih0 = oh * S - pad_top;
    for (int kh = 0; kh < 3; ++kh) {
      const int64_t ih = ih0 + kh;
      const bool inside = ih >= 0 && ih < H;
      r.rows |= inside ? 1 << kh : 0;
      r.in[kh] = image + (inside ? ih : 0) * row_floats;
    }
    r.out = a.out + row * OW * C;
    // The input rows the next output row adds (S of them), spread over this row's tiles.
    const float* pf[2] = {nullptr, nullptr};
    if (prefetch && row + 1 < row_end) {
      const int64_t n1 = (row + 1) / OH, oh1 = (row + 1) % OH;
      const float* image1 = a.src + n1 * H * row_floats;
      for (int k = 0; k < S; ++k) {
        const int64_t ih = oh1 * S - pad_top + 3 - S + k;
        if (ih >= 0 && ih < H) pf[k] = image1 + ih * row_floats;
      }
    }
    int64_t ow = 0;
    for (; ow < ow_lo; ++ow) dw3_pixel(r, weight, bias_p, C, W, ow * S - pad_left, ow, epi);
    for (; ow + 4 <= ow_hi; ow += 4) {
      const int64_t iw0 = ow * S - pad_left;
      if (pf[0] || pf[1]) {
        const int64_t f0 = ow == ow_lo ? 0 : iw0 * C;
        const int64_t f1 = ow + 8 > ow_hi ? row_floats : (iw0 + 4 * S) * C;
        for (int k = 0; k < S; ++k) {
          if (pf[k]) dw_prefetch(pf[k] + f0, pf[k] + f1);
        }
      }
      const __mmask16 mask = 0xFFFF;
      int64_t c = 0;
      for (; c < C_full; c += 16) {
        dw3_tile4<S, false>(r, weight, bias_p, C, iw0, ow, c, mask, epi);
      }
      if (c < C) dw3_tile4<S, true>(r, weight, bias_p, C, iw0, ow, c, tail_mask, epi);
    }
    for (; ow < OW; ++ow) dw3_pixel(r, weight, bias_p, C, W, ow * S - pad_left, ow, epi);
  }
}

}  // namespace

void depthwise_f32(const F32DepthwiseArgs& a) {
  const int64_t rows = a.N * a.OH;
  if (a.KH == 3 && a.KW == 3 && a.dil_h == 1 && a.dil_w == 1 && a.stride_h == a.stride_w &&
      (a.stride_h == 1 || a.stride_h == 2)) {
    // Contiguous rows per thread: neighbouring output rows share input rows.
    int64_t tasks = get_num_threads();
    if (tasks > rows) tasks = rows;
    if (tasks < 1) tasks = 1;
    const bool s1 = a.stride_h == 1;
    // Prefetching pays at stride 1, and at stride 2 once the input no longer sits in L3
    // (measured: 112x112x96 batch 8 1.5x faster with it; 28x28x192 and 14x14x576 batch 8,
    // which the L3 holds, ~15% slower: at stride 2 it is twice the prefetches per output).
    const bool prefetch = s1 || a.N * a.H * a.W * a.C * 4 > (int64_t{16} << 20);
    parallel_for(tasks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t r0 = rows * t / tasks, r1 = rows * (t + 1) / tasks;
        if (s1) {
          dw3_rows<1>(a, r0, r1, prefetch);
        } else {
          dw3_rows<2>(a, r0, r1, prefetch);
        }
      }
    });
    return;
  }
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
