// AVX2 INT8 pooling on NHWC codes: the AVX-512 kernels' scheme on 256-bit vectors. Without
// masked byte loads the last vector of a pixel is moved back to end at channel C (it redoes a
// few channels, with the same result); images with fewer channels than one vector take the
// scalar reference.
#include <immintrin.h>

#include <cstdint>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace avx2 {
namespace {

constexpr int64_t kMaxBlock = 128;  // channels per pass: 4 ymm of codes for max pooling
constexpr int64_t kAvgBlock = 128;  // 8 ymm of 16-bit sums (16 channels each)
// taps a 16-bit sum holds: 256 * 255 < 2^16 and 256 * -128 >= -2^15
constexpr int kFlush = 256;
constexpr int64_t kTaskBytes = 16384;  // output (max) or input (average) bytes per parallel task

template <bool SIGNED>
__m256i vmax(__m256i a, __m256i b) {
  return SIGNED ? _mm256_max_epi8(a, b) : _mm256_max_epu8(a, b);
}

// Byte offsets of the nv vectors (WIDTH channels each) of the block at c0, the last one
// moved back to end at C (needs C >= WIDTH).
template <int WIDTH>
void vector_offsets(int64_t c0, int64_t C, int nv, int64_t* off) {
  for (int j = 0; j < nv; ++j) {
    const int64_t o = c0 + WIDTH * j;
    off[j] = o + WIDTH <= C ? o : C - WIDTH;
  }
}

// What the pixels of one output row share, in registers (see the AVX-512 kernel).
struct MaxRow {
  const uint8_t* image;  // first tap row inside the image, at column 0
  int64_t taps_h, tap_row_step, tap_step, C, stride_w, pad_w, dil_w;
  int64_t off[4];  // the block's vectors
};

// One output pixel of a block of NV vectors; KW > 0: the window's KW columns are all inside the
// image (an unrolled loop); KW == 0: taps [kw_begin, kw_end).
template <bool SIGNED, int NV, int KW>
void max_pixel(const MaxRow& r, int64_t ow, int64_t kw_begin, int64_t kw_end, uint8_t* out) {
  __m256i acc[NV];
  for (int j = 0; j < NV; ++j) acc[j] = _mm256_set1_epi8(SIGNED ? -128 : 0);
  if (KW > 0) kw_begin = 0, kw_end = KW;
  const uint8_t* p0 = r.image + (ow * r.stride_w - r.pad_w + kw_begin * r.dil_w) * r.C;
  for (int64_t kh = 0; kh < r.taps_h; ++kh, p0 += r.tap_row_step) {
    const uint8_t* p = p0;
    for (int64_t kw = kw_begin; kw < kw_end; ++kw, p += r.tap_step) {
      for (int j = 0; j < NV; ++j) {
        acc[j] = vmax<SIGNED>(acc[j],
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + r.off[j])));
      }
    }
  }
  for (int j = 0; j < NV; ++j) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r.off[j]), acc[j]);
  }
}

template <bool SIGNED, int NV, int KW>
void max_block(const QuantMaxPoolArgs& a, const MaxRow& row, uint8_t* out) {
  const MaxRow r = row;
  const int64_t OW = a.OW;
  const int64_t* kw_begin = a.kw_begin;
  const int64_t* kw_end = a.kw_end;
  for (int64_t ow = 0; ow < OW; ++ow, out += r.C) {
    const int64_t b = kw_begin[ow], e = kw_end[ow];
    if (KW > 0 && b == 0 && e == KW) {
      max_pixel<SIGNED, NV, KW>(r, ow, b, e, out);
    } else {
      max_pixel<SIGNED, NV, 0>(r, ow, b, e, out);
    }
  }
}

template <bool SIGNED, int NV>
void max_block(const QuantMaxPoolArgs& a, const MaxRow& r, uint8_t* out) {
  const int64_t kw = a.kw_end[a.OW / 2] - a.kw_begin[a.OW / 2];  // a middle window's
  if (kw == 3) {
    max_block<SIGNED, NV, 3>(a, r, out);
  } else if (kw == 2) {
    max_block<SIGNED, NV, 2>(a, r, out);
  } else {
    max_block<SIGNED, NV, 0>(a, r, out);
  }
}

template <bool SIGNED>
void max_rows(const QuantMaxPoolArgs& a, int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = row / a.OH, oh = row % a.OH;
    const int64_t h = oh * a.stride_h - a.pad_h + a.kh_begin[oh] * a.dil_h;
    for (int64_t c0 = 0; c0 < a.C; c0 += kMaxBlock) {
      const int64_t nc = a.C - c0 < kMaxBlock ? a.C - c0 : kMaxBlock;
      const int nv = static_cast<int>((nc + 31) / 32);
      MaxRow r{a.in + ((n * a.H + h) * a.W) * a.C, a.kh_end[oh] - a.kh_begin[oh],
               a.dil_h * a.W * a.C, a.dil_w * a.C, a.C, a.stride_w, a.pad_w, a.dil_w, {}};
      vector_offsets<32>(c0, a.C, nv, r.off);
      uint8_t* out = a.out + row * a.OW * a.C;
      switch (nv) {
        case 1: max_block<SIGNED, 1>(a, r, out); break;
        case 2: max_block<SIGNED, 2>(a, r, out); break;
        case 3: max_block<SIGNED, 3>(a, r, out); break;
        default: max_block<SIGNED, 4>(a, r, out); break;
      }
    }
  }
}

// round_half_even(n / d) for 0 <= n <= 255 d (see the AVX-512 kernel).
__m256i div_round(__m256i n, const PoolDivisor& d) {
  const __m256i mul = _mm256_set1_epi32(static_cast<int32_t>(d.mul));
  const __m128i shift = _mm_cvtsi32_si128(static_cast<int>(d.shift));
  const __m256i even = _mm256_srl_epi64(_mm256_mul_epu32(n, mul), shift);
  const __m256i odd = _mm256_srl_epi64(_mm256_mul_epu32(_mm256_srli_epi64(n, 32), mul), shift);
  const __m256i q = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  const __m256i count = _mm256_set1_epi32(d.count), one = _mm256_set1_epi32(1);
  const __m256i r2 = _mm256_slli_epi32(_mm256_sub_epi32(n, _mm256_mullo_epi32(q, count)), 1);
  const __m256i odd_q = _mm256_cmpeq_epi32(_mm256_and_si256(q, one), one);
  const __m256i up = _mm256_or_si256(_mm256_cmpgt_epi32(r2, count),
                                     _mm256_and_si256(_mm256_cmpeq_epi32(r2, count), odd_q));
  return _mm256_sub_epi32(q, up);  // up lanes are -1
}

template <bool SIGNED>
__m256i widen16(const uint8_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return SIGNED ? _mm256_cvtepi8_epi16(v) : _mm256_cvtepu8_epi16(v);
}

template <bool SIGNED>
void flush16(__m256i acc, int32_t* sums) {
  const __m128i lo = _mm256_castsi256_si128(acc), hi = _mm256_extracti128_si256(acc, 1);
  const __m256i s0 = SIGNED ? _mm256_cvtepi16_epi32(lo) : _mm256_cvtepu16_epi32(lo);
  const __m256i s1 = SIGNED ? _mm256_cvtepi16_epi32(hi) : _mm256_cvtepu16_epi32(hi);
  __m256i* v = reinterpret_cast<__m256i*>(sums);
  _mm256_store_si256(v, _mm256_add_epi32(_mm256_load_si256(v), s0));
  _mm256_store_si256(v + 1, _mm256_add_epi32(_mm256_load_si256(v + 1), s1));
}

// Sums of window (oh, ow) for the NV vectors of 16 channels at offsets off into sums.
template <bool SIGNED, int NV>
void window_sums(const QuantAdaptiveAvgPoolArgs& a, const uint8_t* image, int64_t oh,
                 int64_t ow, const int64_t* off, int32_t* sums) {
  __m256i acc[NV];
  for (int j = 0; j < NV; ++j) acc[j] = _mm256_setzero_si256();
  int pending = 0;
  for (int64_t h = a.h_start[oh]; h < a.h_end[oh]; ++h) {
    const uint8_t* p = image + (h * a.W + a.w_start[ow]) * a.C;
    for (int64_t w = a.w_start[ow]; w < a.w_end[ow]; ++w, p += a.C) {
      for (int j = 0; j < NV; ++j) acc[j] = _mm256_add_epi16(acc[j], widen16<SIGNED>(p + off[j]));
      if (++pending == kFlush) {
        for (int j = 0; j < NV; ++j) {
          flush16<SIGNED>(acc[j], sums + 16 * j);
          acc[j] = _mm256_setzero_si256();
        }
        pending = 0;
      }
    }
  }
  for (int j = 0; j < NV; ++j) flush16<SIGNED>(acc[j], sums + 16 * j);
}

// 16 int32 lanes in [0, 255] -> 16 bytes in order.
__m128i pack_bytes(__m256i lo, __m256i hi) {
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8);
  return _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

template <bool SIGNED>
void avg_task(const QuantAdaptiveAvgPoolArgs& a, int64_t blocks, int64_t t) {
  const int64_t pixel = t / blocks, c0 = t % blocks * kAvgBlock;
  const int64_t n = pixel / (a.OH * a.OW), oh = pixel / a.OW % a.OH, ow = pixel % a.OW;
  const int64_t nc = a.C - c0 < kAvgBlock ? a.C - c0 : kAvgBlock;
  const int nv = static_cast<int>((nc + 15) / 16);
  int64_t off[8];
  vector_offsets<16>(c0, a.C, nv, off);
  alignas(32) int32_t sums[kAvgBlock] = {};
  const uint8_t* image = a.in + n * a.H * a.W * a.C;
  switch (nv) {
    case 1: window_sums<SIGNED, 1>(a, image, oh, ow, off, sums); break;
    case 2: window_sums<SIGNED, 2>(a, image, oh, ow, off, sums); break;
    case 3: window_sums<SIGNED, 3>(a, image, oh, ow, off, sums); break;
    case 4: window_sums<SIGNED, 4>(a, image, oh, ow, off, sums); break;
    case 5: window_sums<SIGNED, 5>(a, image, oh, ow, off, sums); break;
    case 6: window_sums<SIGNED, 6>(a, image, oh, ow, off, sums); break;
    case 7: window_sums<SIGNED, 7>(a, image, oh, ow, off, sums); break;
    default: window_sums<SIGNED, 8>(a, image, oh, ow, off, sums); break;
  }
  const PoolDivisor d = a.divisor[oh * a.OW + ow];
  const __m256i bias = _mm256_set1_epi32(SIGNED ? 128 * d.count : 0);
  const __m128i flip = _mm_set1_epi8(SIGNED ? static_cast<char>(0x80) : 0);
  uint8_t* out = a.out + pixel * a.C;
  for (int j = 0; j < nv; ++j) {
    const __m256i* s = reinterpret_cast<const __m256i*>(sums + 16 * j);
    const __m256i q0 = div_round(_mm256_add_epi32(_mm256_load_si256(s), bias), d);
    const __m256i q1 = div_round(_mm256_add_epi32(_mm256_load_si256(s + 1), bias), d);
    const __m128i codes = _mm_xor_si128(pack_bytes(q0, q1), flip);
    const int64_t skip = c0 + 16 * j - off[j];  // channels of the previous block (another task)
    if (skip == 0) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + off[j]), codes);
    } else {
      alignas(16) uint8_t tmp[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), codes);
      for (int64_t k = skip; k < 16; ++k) out[off[j] + k] = tmp[k];
    }
  }
}

}  // namespace

void quantized_max_pool2d(const QuantMaxPoolArgs& args) {
  if (args.C < 32) {
    ref::quantized_max_pool2d(args);  // less than one vector per pixel
    return;
  }
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
  if (args.C < 16) {
    ref::quantized_adaptive_avg_pool2d(args);  // less than one vector per pixel
    return;
  }
  const QuantAdaptiveAvgPoolArgs a = args;
  const int64_t blocks = (a.C + kAvgBlock - 1) / kAvgBlock;
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

}  // namespace avx2
}  // namespace pyfastcnn
