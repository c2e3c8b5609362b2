// The INT8 requantization epilogue (kernels.h, Int8Epilogue) on 8 int32 lanes for the AVX2
// kernels; the float part (scale, bias, clamp) is Epilogue256's. Internal linkage: each
// including unit keeps its own copy compiled with its own flags.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "epilogue_avx2.h"
#include "pyfastcnn/kernels.h"
#include "../int8_out_kind.h"

namespace pyfastcnn {
namespace avx2 {
namespace {

// Lanes [0, valid) selected (sign bit set), for maskload / maskstore.
inline __m256i lane_mask8(int valid) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The per-channel operands of channels n .. n + 7 (the first `valid`): the zero-point offsets
// added to the sums, the scales and biases (zero for int32 output).
struct ChannelOperands8 {
  __m256i offset;
  __m256 scale, bias;
};
template <Int8OutKind KIND>
ChannelOperands8 channel_operands(const Int8Epilogue& epi, int64_t n, int valid) {
  const __m256i mask = lane_mask8(valid);
  ChannelOperands8 c{epi.col_offset ? _mm256_maskload_epi32(epi.col_offset + n, mask)
                                    : _mm256_setzero_si256(),
                     _mm256_setzero_ps(), _mm256_setzero_ps()};
  if constexpr (KIND != Int8OutKind::i32) {
    c.scale = _mm256_maskload_ps(epi.scale + n, mask);
    c.bias = Epilogue256::load_bias(epi.bias, n, mask);
  }
  return c;
}

// residual_scale * (r - residual_zero_point) of the first `valid` (<= 8) residual codes at res.
inline __m256 residual_term(const uint8_t* res, int valid, const Int8Epilogue& epi) {
  __m128i bytes;
  if (valid >= 8) {
    bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(res));
  } else {
    int64_t raw = 0;
    std::memcpy(&raw, res, static_cast<size_t>(valid > 0 ? valid : 0));
    bytes = _mm_cvtsi64_si128(raw);
  }
  const __m256i r = epi.residual_signed ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes);
  return _mm256_mul_ps(
      _mm256_cvtepi32_ps(_mm256_sub_epi32(r, _mm256_set1_epi32(epi.residual_zero_point))),
      _mm256_set1_ps(epi.residual_scale));
}

// The float value of int32 sums acc (offsets added): clamp(acc * scale + bias [+ residual]).
inline __m256 epilogue_ps(__m256i acc, const ChannelOperands8& c, const Int8Epilogue& epi,
                          const uint8_t* res, int valid) {
  const Epilogue256 e(epi.clamp_min, epi.clamp_max);
  const __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), c.scale, c.bias);
  return e.clamp(res ? _mm256_add_ps(y, residual_term(res, valid, epi)) : y);
}

// The 8-bit codes of acc as int32 lanes: y (already in output units, kernels.h) clamped to the
// code range first (y as max's first operand: NaN becomes the low code, as in the reference),
// then rounded half to even.
template <Int8OutKind KIND>
__m256i requantize_epi32(__m256i acc, const ChannelOperands8& c, const Int8Epilogue& epi,
                         const uint8_t* res, int valid) {
  constexpr bool kSigned = KIND == Int8OutKind::s8;
  const __m256 y = _mm256_min_ps(
      _mm256_max_ps(epilogue_ps(acc, c, epi, res, valid), _mm256_set1_ps(kSigned ? -128.0f : 0.0f)),
      _mm256_set1_ps(kSigned ? 127.0f : 255.0f));
  return _mm256_cvtps_epi32(y);
}

// Stores 16 channels n .. n + 15 of one output row (the first `cols`), from two vectors of sums
// lo (channels n ..) and hi (n + 8 ..), offsets already added.
template <Int8OutKind KIND>
void store_row16(__m256i lo, __m256i hi, const ChannelOperands8& c0, const ChannelOperands8& c1,
                 const Int8Epilogue& epi, char* row, int64_t n, int cols,
                 const uint8_t* res_row) {
  const uint8_t* res = res_row ? res_row + n : nullptr;
  if constexpr (KIND == Int8OutKind::i32 || KIND == Int8OutKind::f32) {
    float* out = reinterpret_cast<float*>(row) + n;
    const auto store = [&](int64_t at, __m256i acc, const ChannelOperands8& c, int valid) {
      if (valid <= 0) return;
      __m256 v;
      if constexpr (KIND == Int8OutKind::i32) {
        v = _mm256_castsi256_ps(acc);
      } else {
        v = epilogue_ps(acc, c, epi, res ? res + at : nullptr, valid);
      }
      store_lanes(out + at, v, valid);
    };
    store(0, lo, c0, cols);
    store(8, hi, c1, cols - 8);
  } else {
    const __m256i q0 = requantize_epi32<KIND>(lo, c0, epi, res, cols);
    const __m256i q1 = cols > 8 ? requantize_epi32<KIND>(hi, c1, epi, res ? res + 8 : nullptr,
                                                         cols - 8)
                                : _mm256_setzero_si256();
    // The codes are in range: the packs only narrow. Lanes end up in the order q0[0..3],
    // q1[0..3] | q0[4..7], q1[4..7]; the 64-bit permute puts q0 in the low half.
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
    const __m256i b = KIND == Int8OutKind::s8 ? _mm256_packs_epi16(w, w) : _mm256_packus_epi16(w, w);
    const __m128i bytes = _mm_unpacklo_epi64(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
    if (cols >= 16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(row + n), bytes);
    } else {
      alignas(16) char tmp[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
      std::memcpy(row + n, tmp, static_cast<size_t>(cols));
    }
  }
}

}  // namespace
}  // namespace avx2
}  // namespace pyfastcnn
