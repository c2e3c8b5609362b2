// AVX-512 INT8 pooling on NHWC codes. Channels are innermost, so a pixel's codes are contiguous
// vectors: max pooling is a vpmaxub/vpmaxsb per tap and 64 channels, average pooling widens
// 32 codes to 16-bit lanes per tap (exact for 256 taps) and to int32 sums after that. Tails
// over C are masked. The rounding division uses PoolDivisor's multiply and shift.
#include <immintrin.h>

#include <cstdint>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace avx512 {
namespace {

constexpr int64_t kMaxBlock = 256;  // channels per pass: 4 zmm of codes for max pooling
constexpr int64_t kAvgBlock = 256;  // 8 zmm of 16-bit sums for average pooling
// taps a 16-bit sum holds: 256 * 255 < 2^16 and 256 * -128 >= -2^15
constexpr int kFlush = 256;
constexpr int64_t kTaskBytes = 16384;  // output (max) or input (average) bytes per parallel task

__mmask64 mask64(int64_t valid) {
  if (valid <= 0) return 0;
  return valid >= 64 ? ~__mmask64{0} : (__mmask64{1} << valid) - 1;
}

template <bool SIGNED>
__m512i vmax(__m512i a, __m512i b) {
  return SIGNED ? _mm512_max_epi8(a, b) : _mm512_max_epu8(a, b);
}

// Whole vectors go unmasked (plain loads and stores are cheaper, masked stores notably so on
// AMD cores); only a partial last vector (TAIL) uses the mask.
template <bool TAIL>
__m512i load64(const uint8_t* p, __mmask64 m) {
  return TAIL ? _mm512_maskz_loadu_epi8(m, p) : _mm512_loadu_si512(p);
}

// What the pixels of one output row share, in registers (the byte stores to `out` could alias
// anything read through a pointer, so nothing is reloaded from the arguments per pixel).
struct MaxRow {
  const uint8_t* image;  // first tap row inside the image, at column 0 and the block's c0
  int64_t taps_h;        // tap rows inside the image
  int64_t tap_row_step;  // bytes between tap rows (dil_h * W * C)
  int64_t tap_step;      // bytes between tap columns (dil_w * C)
  int64_t C, stride_w, pad_w, dil_w;
};

// One output pixel, channels [0, NV * 64) of the block; mask `tail` cuts the last vector when
// TAIL. KW > 0: the window's KW columns are all inside the image (an unrolled loop); KW == 0:
// taps [kw_begin, kw_end).
template <bool SIGNED, int NV, bool TAIL, int KW>
void max_pixel(const MaxRow& r, int64_t ow, int64_t kw_begin, int64_t kw_end, __mmask64 tail,
               uint8_t* out) {
  __m512i acc[NV];
  for (int j = 0; j < NV; ++j) acc[j] = _mm512_set1_epi8(SIGNED ? -128 : 0);
  if (KW > 0) kw_begin = 0, kw_end = KW;
  const uint8_t* p0 = r.image + (ow * r.stride_w - r.pad_w + kw_begin * r.dil_w) * r.C;
  for (int64_t kh = 0; kh < r.taps_h; ++kh, p0 += r.tap_row_step) {
    const uint8_t* p = p0;
    for (int64_t kw = kw_begin; kw < kw_end; ++kw, p += r.tap_step) {
      for (int j = 0; j < NV - 1; ++j) {
        acc[j] = vmax<SIGNED>(acc[j], _mm512_loadu_si512(p + 64 * j));
      }
      acc[NV - 1] = vmax<SIGNED>(acc[NV - 1], load64<TAIL>(p + 64 * (NV - 1), tail));
    }
  }
  for (int j = 0; j < NV - 1; ++j) _mm512_storeu_si512(out + 64 * j, acc[j]);
  if (TAIL) {
    _mm512_mask_storeu_epi8(out + 64 * (NV - 1), tail, acc[NV - 1]);
  } else {
    _mm512_storeu_si512(out + 64 * (NV - 1), acc[NV - 1]);
  }
}

// One output row of a block; KW > 0: windows of KW columns inside the image take the unrolled
// loop (all but the edge columns of the usual 2x2 and 3x3 pools).
template <bool SIGNED, int NV, bool TAIL, int KW>
void max_block(const QuantMaxPoolArgs& a, const MaxRow& row, __mmask64 tail, uint8_t* out) {
  const MaxRow r = row;
  const int64_t OW = a.OW;
  const int64_t* kw_begin = a.kw_begin;
  const int64_t* kw_end = a.kw_end;
  for (int64_t ow = 0; ow < OW; ++ow, out += r.C) {
    const int64_t b = kw_begin[ow], e = kw_end[ow];
    if (KW > 0 && b == 0 && e == KW) {
      max_pixel<SIGNED, NV, TAIL, KW>(r, ow, b, e, tail, out);
    } else {
      max_pixel<SIGNED, NV, TAIL, 0>(r, ow, b, e, tail, out);
    }
  }
}

template <bool SIGNED, int NV>
void max_block(const QuantMaxPoolArgs& a, const MaxRow& r, int64_t nc, uint8_t* out) {
  const __mmask64 tail = mask64(nc - 64 * (NV - 1));
  const int64_t kw = a.kw_end[a.OW / 2] - a.kw_begin[a.OW / 2];  // a middle window's
  if (nc % 64 != 0) {
    max_block<SIGNED, NV, true, 0>(a, r, tail, out);
  } else if (kw == 3) {
    max_block<SIGNED, NV, false, 3>(a, r, tail, out);
  } else if (kw == 2) {
    max_block<SIGNED, NV, false, 2>(a, r, tail, out);
  } else {
    max_block<SIGNED, NV, false, 0>(a, r, tail, out);
  }
}

template <bool SIGNED>
void max_rows(const QuantMaxPoolArgs& a, int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = row / a.OH, oh = row % a.OH;
    const int64_t h = oh * a.stride_h - a.pad_h + a.kh_begin[oh] * a.dil_h;
    for (int64_t c0 = 0; c0 < a.C; c0 += kMaxBlock) {
      const int64_t nc = a.C - c0 < kMaxBlock ? a.C - c0 : kMaxBlock;
      const MaxRow r{a.in + ((n * a.H + h) * a.W) * a.C + c0, a.kh_end[oh] - a.kh_begin[oh],
                     a.dil_h * a.W * a.C, a.dil_w * a.C, a.C, a.stride_w, a.pad_w, a.dil_w};
      uint8_t* out = a.out + row * a.OW * a.C + c0;
      switch ((nc + 63) / 64) {
        case 1: max_block<SIGNED, 1>(a, r, nc, out); break;
        case 2: max_block<SIGNED, 2>(a, r, nc, out); break;
        case 3: max_block<SIGNED, 3>(a, r, nc, out); break;
        default: max_block<SIGNED, 4>(a, r, nc, out); break;
      }
    }
  }
}

// round_half_even(n / d) for 0 <= n <= 255 d, lanes of int32: q = (n * mul) >> shift (64-bit
// products of the even and the odd lanes), then the remainder decides the rounding.
__m512i div_round(__m512i n, const PoolDivisor& d) {
  const __m512i mul = _mm512_set1_epi32(static_cast<int32_t>(d.mul));
  const __m128i shift = _mm_cvtsi32_si128(static_cast<int>(d.shift));
  const __m512i even = _mm512_srl_epi64(_mm512_mul_epu32(n, mul), shift);
  const __m512i odd = _mm512_srl_epi64(_mm512_mul_epu32(_mm512_srli_epi64(n, 32), mul), shift);
  const __m512i q = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  const __m512i count = _mm512_set1_epi32(d.count), one = _mm512_set1_epi32(1);
  const __m512i r2 = _mm512_slli_epi32(_mm512_sub_epi32(n, _mm512_mullo_epi32(q, count)), 1);
  const __mmask16 up = _mm512_cmpgt_epi32_mask(r2, count) |
                       (_mm512_cmpeq_epi32_mask(r2, count) & _mm512_test_epi32_mask(q, one));
  return _mm512_mask_add_epi32(q, up, q, one);
}

template <bool SIGNED>
__m512i widen16(__m256i codes) {
  return SIGNED ? _mm512_cvtepi8_epi16(codes) : _mm512_cvtepu8_epi16(codes);
}

template <bool SIGNED>
void flush16(__m512i acc, int32_t* sums) {
  const __m256i lo = _mm512_castsi512_si256(acc), hi = _mm512_extracti64x4_epi64(acc, 1);
  const __m512i s0 = SIGNED ? _mm512_cvtepi16_epi32(lo) : _mm512_cvtepu16_epi32(lo);
  const __m512i s1 = SIGNED ? _mm512_cvtepi16_epi32(hi) : _mm512_cvtepu16_epi32(hi);
  _mm512_store_si512(sums, _mm512_add_epi32(_mm512_load_si512(sums), s0));
  _mm512_store_si512(sums + 16, _mm512_add_epi32(_mm512_load_si512(sums + 16), s1));
}

// Sums of the codes of window (oh, ow) for the channels [0, NV * 32) at `image` into sums.
template <bool SIGNED, int NV>
void window_sums(const QuantAdaptiveAvgPoolArgs& a, const uint8_t* image, int64_t oh,
                 int64_t ow, const __mmask32* m, int32_t* sums) {
  __m512i acc[NV];
  for (int j = 0; j < NV; ++j) acc[j] = _mm512_setzero_si512();
  int pending = 0;
  for (int64_t h = a.h_start[oh]; h < a.h_end[oh]; ++h) {
    const uint8_t* p = image + (h * a.W + a.w_start[ow]) * a.C;
    for (int64_t w = a.w_start[ow]; w < a.w_end[ow]; ++w, p += a.C) {
      for (int j = 0; j < NV; ++j) {
        acc[j] = _mm512_add_epi16(acc[j],
                                  widen16<SIGNED>(_mm256_maskz_loadu_epi8(m[j], p + 32 * j)));
      }
      if (++pending == kFlush) {
        for (int j = 0; j < NV; ++j) {
          flush16<SIGNED>(acc[j], sums + 32 * j);
          acc[j] = _mm512_setzero_si512();
        }
        pending = 0;
      }
    }
  }
  for (int j = 0; j < NV; ++j) flush16<SIGNED>(acc[j], sums + 32 * j);
}

template <bool SIGNED>
void avg_task(const QuantAdaptiveAvgPoolArgs& a, int64_t blocks, int64_t t) {
  const int64_t pixel = t / blocks, c0 = t % blocks * kAvgBlock;
  const int64_t n = pixel / (a.OH * a.OW), oh = pixel / a.OW % a.OH, ow = pixel % a.OW;
  const int64_t nc = a.C - c0 < kAvgBlock ? a.C - c0 : kAvgBlock;
  __mmask32 m[8];
  for (int j = 0; j < 8; ++j) m[j] = static_cast<__mmask32>(mask64(nc - 32 * j));
  alignas(64) int32_t sums[kAvgBlock] = {};
  const uint8_t* image = a.in + n * a.H * a.W * a.C + c0;
  switch ((nc + 31) / 32) {
    case 1: window_sums<SIGNED, 1>(a, image, oh, ow, m, sums); break;
    case 2: window_sums<SIGNED, 2>(a, image, oh, ow, m, sums); break;
    case 3: window_sums<SIGNED, 3>(a, image, oh, ow, m, sums); break;
    case 4: window_sums<SIGNED, 4>(a, image, oh, ow, m, sums); break;
    case 5: window_sums<SIGNED, 5>(a, image, oh, ow, m, sums); break;
    case 6: window_sums<SIGNED, 6>(a, image, oh, ow, m, sums); break;
    case 7: window_sums<SIGNED, 7>(a, image, oh, ow, m, sums); break;
    default: window_sums<SIGNED, 8>(a, image, oh, ow, m, sums); break;
  }
  const PoolDivisor d = a.divisor[oh * a.OW + ow];
  // int8: divide s + 128 * count (non-negative), then flip back by 128 (an even shift).
  const __m512i bias = _mm512_set1_epi32(SIGNED ? 128 * d.count : 0);
  const __m128i flip = _mm_set1_epi8(SIGNED ? static_cast<char>(0x80) : 0);
  uint8_t* out = a.out + pixel * a.C + c0;
  for (int64_t c = 0; c < nc; c += 16) {
    const __m512i q = div_round(_mm512_add_epi32(_mm512_load_si512(sums + c), bias), d);
    const __mmask16 keep = static_cast<__mmask16>(mask64(nc - c));
    _mm_mask_storeu_epi8(out + c, keep, _mm_xor_si128(_mm512_cvtepi32_epi8(q), flip));
  }
}

}  // namespace

void quantized_max_pool2d(const QuantMaxPoolArgs& args) {
  const QuantMaxPoolArgs a = args;
  const int64_t row_bytes = a.OW * a.C;
  const int64_t grain = row_bytes >= kTaskBytes ? 1 : kTaskBytes / row_bytes;
  parallel_for(a.N * a.OH, grain, [&](int64_t begin, int64_t end) {
    if (a.is_signed) {
      max_rows<true>(a, begin, end);
    } else {
      max_rows<false>(a, begin, end);
    }
  });
}

void quantized_adaptive_avg_pool2d(const QuantAdaptiveAvgPoolArgs& args) {
  const QuantAdaptiveAvgPoolArgs a = args;
  const int64_t blocks = (a.C + kAvgBlock - 1) / kAvgBlock;
  // a task: one window of one channel block; about kTaskBytes of input per chunk of tasks
  const int64_t window = ((a.H + a.OH - 1) / a.OH + 1) * ((a.W + a.OW - 1) / a.OW + 1);
  const int64_t task_bytes = window * (a.C < kAvgBlock ? a.C : kAvgBlock);
  const int64_t grain = task_bytes >= kTaskBytes ? 1 : kTaskBytes / task_bytes;
  parallel_for(a.N * a.OH * a.OW * blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (a.is_signed) {
        avg_task<true>(a, blocks, t);
      } else {
        avg_task<false>(a, blocks, t);
      }
    }
  });
}

}  // namespace avx512
}  // namespace pyfastcnn
