// INT8 depthwise conv on AVX-512 VNNI (see Int8DepthwiseArgs). Lane c of a vector is channel c:
// per tap, 16 input bytes widen to int32 lanes and one vpdpwssd adds x * w against the
// weight's (w, 0) int16 pair. A task is one output row times up to 64 channels
// (4 independent accumulators per pixel); the epilogue is the dense kernels' (store_tile_vector).
// GCC 12 warns that _mm512_undefined_*() in its own headers is uninitialized (fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>

#include "int8_epilogue_avx512vnni.h"
#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace avx512_vnni {
namespace {

template <bool SIGNED>
inline __m512i widen(__mmask16 mask, const uint8_t* p) {
  const __m128i bytes = _mm_maskz_loadu_epi8(mask, p);
  return SIGNED ? _mm512_cvtepi8_epi32(bytes) : _mm512_cvtepu8_epi32(bytes);
}

// Block b of NB at p; only the last block of a task with a channel tail (TAIL) is masked: a
// plain load folds into vpmovzxbd.
template <bool SIGNED, bool TAIL, int NB>
inline __m512i widen_block(const __mmask16* mask, int b, const uint8_t* p) {
  if (TAIL && b == NB - 1) return widen<SIGNED>(mask[b], p);
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return SIGNED ? _mm512_cvtepi8_epi32(bytes) : _mm512_cvtepu8_epi32(bytes);
}

constexpr int64_t kMaxFastTaps = 64;

// Per-block constants of a task's channels: lanes, and the epilogue's scale, bias, offset.
template <int NB>
struct Lanes {
  __mmask16 mask[NB];
  __m512 scale[NB], bias[NB];
  __m512i offset[NB];
  Lanes(const Int8Epilogue& epi, int64_t C, int64_t c0) {
    for (int b = 0; b < NB; ++b) {
      const int64_t c = c0 + 16 * b;
      mask[b] = lane_mask(static_cast<int>(C - c));
      scale[b] = epi.scale ? _mm512_maskz_loadu_ps(mask[b], epi.scale + c) : _mm512_setzero_ps();
      bias[b] = epi.bias ? _mm512_maskz_loadu_ps(mask[b], epi.bias + c) : _mm512_setzero_ps();
      offset[b] = epi.col_offset ? _mm512_maskz_loadu_epi32(mask[b], epi.col_offset + c)
                                 : _mm512_setzero_si512();
    }
  }
};

template <Int8OutKind KIND, int NB>
inline void store_pixel(const Int8DepthwiseArgs& a, const Lanes<NB>& l, const OutputClamp& clamp,
                        const __m512i* acc, int64_t m, int64_t c0) {
  const Int8Epilogue& epi = a.epi;
  char* out = static_cast<char*>(a.out) + m * a.C * out_bytes(KIND);
  const uint8_t* res_row = epi.residual ? epi.residual + m * epi.residual_ld : nullptr;
  for (int b = 0; b < NB; ++b) {
    store_tile_vector<KIND>(_mm512_add_epi32(acc[b], l.offset[b]), l.mask[b], l.scale[b],
                            l.bias[b], clamp, epi, out, c0 + 16 * b, res_row);
  }
}

// Output row `row` (= n * OH + oh), channels c0 .. c0 + 16 * NB (lanes past C masked off).
// Columns whose taps are all inside the image rows' columns run NP pixels at a time from a
// table of tap pointers (a tap in a padding row reads the zero point with step 0); the others
// check each tap.
template <Int8OutKind KIND, bool SIGNED, bool TAIL, int NB, int NP>
void depthwise_row(const Int8DepthwiseArgs& args, int64_t row, int64_t c0) {
  // A local copy: output stores (char) could alias the caller's struct, not this one, so its
  // epilogue constants stay in registers.
  const Int8DepthwiseArgs a = args;
  const int64_t C = a.C, n = row / a.OH, oh = row % a.OH, T = a.KH * a.KW;
  const Lanes<NB> l(a.epi, C, c0);
  const OutputClamp clamp = output_clamp<KIND>(a.epi);
  alignas(64) uint8_t zp_bytes[16 * NB];
  for (int i = 0; i < 16 * NB; ++i) zp_bytes[i] = a.zero_point;
  const uint8_t* image = a.x + n * a.H * a.W * C + c0;
  const int64_t ih0 = oh * a.stride_h - a.pad_top;
  // Interior columns: iw0 >= 0 and iw0 + (KW - 1) * dil_w < W.
  int64_t ow_lo = (a.pad_left + a.stride_w - 1) / a.stride_w;
  int64_t ow_hi = a.W - 1 - (a.KW - 1) * a.dil_w + a.pad_left;
  ow_hi = ow_hi < 0 ? 0 : ow_hi / a.stride_w + 1;
  if (ow_hi > a.OW) ow_hi = a.OW;
  if (ow_lo > ow_hi || T > kMaxFastTaps) ow_lo = ow_hi = a.OW;
  const uint8_t* tap_base[kMaxFastTaps];
  int64_t tap_step[kMaxFastTaps];
  if (ow_lo < ow_hi) {
    for (int64_t kh = 0, t = 0; kh < a.KH; ++kh) {
      const int64_t ih = ih0 + kh * a.dil_h;
      const bool inside = ih >= 0 && ih < a.H;
      for (int64_t kw = 0; kw < a.KW; ++kw, ++t) {
        tap_base[t] = inside ? image + (ih * a.W + kw * a.dil_w - a.pad_left) * C : zp_bytes;
        tap_step[t] = inside ? a.stride_w * C : 0;
      }
    }
  }
  const auto edge_pixel = [&](int64_t ow) {
    const int64_t iw0 = ow * a.stride_w - a.pad_left;
    __m512i acc[NB];
    for (int b = 0; b < NB; ++b) acc[b] = _mm512_setzero_si512();
    const int32_t* w = a.weight + c0;
    for (int64_t kh = 0; kh < a.KH; ++kh) {
      const int64_t ih = ih0 + kh * a.dil_h;
      const bool row_inside = ih >= 0 && ih < a.H;
      const uint8_t* in_row = row_inside ? image + ih * a.W * C : nullptr;
      for (int64_t kw = 0; kw < a.KW; ++kw, w += a.Cp) {
        const int64_t iw = iw0 + kw * a.dil_w;
        // Taps outside the image read the zero point (the correction in col_offset cancels it).
        const uint8_t* p = row_inside && iw >= 0 && iw < a.W ? in_row + iw * C : zp_bytes;
        for (int b = 0; b < NB; ++b) {
          acc[b] = _mm512_dpwssd_epi32(acc[b], widen<SIGNED>(l.mask[b], p + 16 * b),
                                       _mm512_loadu_si512(w + 16 * b));
        }
      }
    }
    store_pixel<KIND, NB>(a, l, clamp, acc, row * a.OW + ow, c0);
  };
  for (int64_t ow = 0; ow < ow_lo; ++ow) edge_pixel(ow);
  int64_t ow = ow_lo;
  if (a.KW == 3 && a.stride_w == 1 && a.dil_w == 1) {
    // Stride 1, 3 taps wide: the NP pixels' taps of one kernel row read NP + 2 columns, each
    // widened once.
    for (; ow + NP <= ow_hi; ow += NP) {
      __m512i acc[NP][NB];
      for (int p = 0; p < NP; ++p) {
        for (int b = 0; b < NB; ++b) acc[p][b] = _mm512_setzero_si512();
      }
      const int32_t* w = a.weight + c0;
      for (int64_t kh = 0; kh < a.KH; ++kh, w += 3 * a.Cp) {
        const int64_t step = tap_step[kh * 3];
        const uint8_t* src = tap_base[kh * 3] + ow * step;
        __m512i col[NP + 2][NB];
        for (int j = 0; j < NP + 2; ++j) {
          for (int b = 0; b < NB; ++b) {
            col[j][b] = widen_block<SIGNED, TAIL, NB>(l.mask, b, src + j * step + 16 * b);
          }
        }
        for (int kw = 0; kw < 3; ++kw) {
          for (int b = 0; b < NB; ++b) {
            const __m512i wv = _mm512_loadu_si512(w + kw * a.Cp + 16 * b);
            for (int p = 0; p < NP; ++p) {
              acc[p][b] = _mm512_dpwssd_epi32(acc[p][b], col[p + kw][b], wv);
            }
          }
        }
      }
      for (int p = 0; p < NP; ++p) {
        store_pixel<KIND, NB>(a, l, clamp, acc[p], row * a.OW + ow + p, c0);
      }
    }
  }
  for (; ow + NP <= ow_hi; ow += NP) {
    __m512i acc[NP][NB];
    for (int p = 0; p < NP; ++p) {
      for (int b = 0; b < NB; ++b) acc[p][b] = _mm512_setzero_si512();
    }
    const int32_t* w = a.weight + c0;
    for (int64_t t = 0; t < T; ++t, w += a.Cp) {
      const int64_t step = tap_step[t];
      const uint8_t* src = tap_base[t] + ow * step;
      __m512i wv[NB];
      for (int b = 0; b < NB; ++b) wv[b] = _mm512_loadu_si512(w + 16 * b);
      for (int p = 0; p < NP; ++p) {
        for (int b = 0; b < NB; ++b) {
          acc[p][b] = _mm512_dpwssd_epi32(
              acc[p][b], widen_block<SIGNED, TAIL, NB>(l.mask, b, src + p * step + 16 * b), wv[b]);
        }
      }
    }
    for (int p = 0; p < NP; ++p) {
      store_pixel<KIND, NB>(a, l, clamp, acc[p], row * a.OW + ow + p, c0);
    }
  }
  for (; ow < a.OW; ++ow) edge_pixel(ow);
}

template <Int8OutKind KIND, bool SIGNED>
void depthwise(const Int8DepthwiseArgs& a) {
  const int64_t chunks = (a.C + 63) / 64;
  parallel_for(a.N * a.OH * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t row = t / chunks, c0 = t % chunks * 64;
      const int64_t left = a.C - c0;
      if (left % 16 == 0 || left > 64) {
        switch (left >= 64 ? 4 : left / 16) {
          case 1: depthwise_row<KIND, SIGNED, false, 1, 4>(a, row, c0); break;
          case 2: depthwise_row<KIND, SIGNED, false, 2, 4>(a, row, c0); break;
          case 3: depthwise_row<KIND, SIGNED, false, 3, 2>(a, row, c0); break;
          default: depthwise_row<KIND, SIGNED, false, 4, 2>(a, row, c0); break;
        }
      } else {
        switch ((left + 15) / 16) {
          case 1: depthwise_row<KIND, SIGNED, true, 1, 4>(a, row, c0); break;
          case 2: depthwise_row<KIND, SIGNED, true, 2, 4>(a, row, c0); break;
          case 3: depthwise_row<KIND, SIGNED, true, 3, 2>(a, row, c0); break;
          default: depthwise_row<KIND, SIGNED, true, 4, 2>(a, row, c0); break;
        }
      }
    }
  });
}

template <Int8OutKind KIND>
void depthwise_kind(const Int8DepthwiseArgs& a) {
  if (a.x_signed) {
    depthwise<KIND, true>(a);
  } else {
    depthwise<KIND, false>(a);
  }
}

}  // namespace

void int8_depthwise(const Int8DepthwiseArgs& a) {
  switch (a.epi.kind) {
    case Int8OutKind::i32: depthwise_kind<Int8OutKind::i32>(a); break;
    case Int8OutKind::f32: depthwise_kind<Int8OutKind::f32>(a); break;
    case Int8OutKind::s8: depthwise_kind<Int8OutKind::s8>(a); break;
    case Int8OutKind::u8: depthwise_kind<Int8OutKind::u8>(a); break;
  }
}

}  // namespace avx512_vnni
}  // namespace pyfastcnn
