// The INT8 requantization epilogue on 16 int32 lanes, shared by the AVX-512 VNNI kernels
// (dense GEMM/conv and sparse conv); its float part (scale, bias, clamp) is Epilogue512's. Only
// *_avx512vnni.cc units include it; everything here has internal linkage, so each unit keeps its
// own copy compiled with its own flags and nothing leaks to another ISA through the linker.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "epilogue_avx512.h"
#include "pyfastcnn/kernels.h"
#include "../int8_out_kind.h"

namespace pyfastcnn {
namespace avx512_vnni {
namespace {

__mmask16 lane_mask(int valid) {
  return valid >= 16 ? static_cast<__mmask16>(0xFFFF)
                     : (valid <= 0 ? 0 : static_cast<__mmask16>((1u << valid) - 1));
}

// The per-channel operands of channels n .. n + 15 (lanes `mask`) for store_tile_vector: the
// zero-point offsets added to the sums, the scales and biases (zero for int32 output).
struct ChannelOperands {
  __m512i offset;
  __m512 scale, bias;
};
template <Int8OutKind KIND>
ChannelOperands channel_operands(const Int8Epilogue& epi, int64_t n, __mmask16 mask) {
  ChannelOperands c{epi.col_offset ? _mm512_maskz_loadu_epi32(mask, epi.col_offset + n)
                                   : _mm512_setzero_si512(),
                    _mm512_setzero_ps(), _mm512_setzero_ps()};
  if constexpr (KIND != Int8OutKind::i32) {
    c.scale = _mm512_maskz_loadu_ps(mask, epi.scale + n);
    c.bias = Epilogue512::load_bias(epi.bias, n, mask);
  }
  return c;
}

// residual_scale * (r - residual_zero_point) of the 16 residual codes at `res` (lanes `mask`).
inline __m512 residual_term(const uint8_t* res, __mmask16 mask, const Int8Epilogue& epi) {
  const __m128i bytes = _mm_maskz_loadu_epi8(mask, res);
  const __m512i r = epi.residual_signed ? _mm512_cvtepi8_epi32(bytes) : _mm512_cvtepu8_epi32(bytes);
  return _mm512_mul_ps(
      _mm512_cvtepi32_ps(_mm512_sub_epi32(r, _mm512_set1_epi32(epi.residual_zero_point))),
      _mm512_set1_ps(epi.residual_scale));
}

// The bounds outputs are clamped to (output_clamp), made once per tile or task by the callers;
// the vectors are broadcast where they are used.
struct OutputClamp {
  float lo, hi;
};

// The float value of int32 sums acc (offsets already added): clamp(acc * scale + bias [+ the
// residual term of the codes at `res`, when not null]).
inline __m512 epilogue_ps(__m512i acc, const __m512& scale, const __m512& bias,
                          const OutputClamp& clamp, const Int8Epilogue& epi, const uint8_t* res,
                          __mmask16 mask) {
  const Epilogue512 e(clamp.lo, clamp.hi);
  if (!res) return e.apply(_mm512_cvtepi32_ps(acc), scale, bias);
  return e.clamp(_mm512_add_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), scale, bias),
                               residual_term(res, mask, epi)));
}

// The clamp of a kind's outputs: [clamp_min, clamp_max] for float (unused for int32); for 8-bit
// outputs that range intersected with the code range, so that +-inf and values past the int32
// range (which cvtps2dq turns into INT32_MIN) become the range's ends, as in the scalar
// reference. Where the two ranges do not meet, the code-range end nearer the float range (what
// the two clamps in turn give). NaN passes the clamp and converts to INT32_MIN: the low code
// after the final clamp or saturating pack (the reference's too).
template <Int8OutKind KIND>
OutputClamp output_clamp(const Int8Epilogue& epi) {
  if constexpr (KIND != Int8OutKind::u8 && KIND != Int8OutKind::s8) {
    return OutputClamp{epi.clamp_min, epi.clamp_max};
  } else {
    constexpr bool kSigned = KIND == Int8OutKind::s8;
    const float code_lo = kSigned ? -128.0f : 0.0f, code_hi = kSigned ? 127.0f : 255.0f;
    float lo = epi.clamp_min > code_lo ? epi.clamp_min : code_lo;
    float hi = epi.clamp_max < code_hi ? epi.clamp_max : code_hi;
    if (lo > code_hi) lo = code_hi;
    if (hi < code_lo) hi = code_lo;
    return OutputClamp{lo, hi};
  }
}

// The 8-bit output code of int32 sums acc (offsets already added), before the final clamp to
// the output range that callers do with a clamp or with saturating packs (only NaN needs it).
// `clamp` is output_clamp<KIND>. The epilogue arrays of 8-bit outputs are in output units, zero
// point included (kernels.h).
inline __m512i requantize_epi32(__m512i acc, const __m512& scale, const __m512& bias,
                                const OutputClamp& clamp, const Int8Epilogue& epi,
                                const uint8_t* res = nullptr, __mmask16 mask = 0xFFFF) {
  return _mm512_cvtps_epi32(epilogue_ps(acc, scale, bias, clamp, epi, res, mask));
}

// Stores lanes `mask` of acc (int32 sums, offsets already added) at element n of `row` after the
// epilogue of kernels.h (Int8Epilogue): scale and bias hold the lanes' channels, clamp is
// output_clamp<KIND>(epi); res_row is the row's residual codes (null without a residual add).
template <Int8OutKind KIND>
void store_tile_vector(__m512i acc, __mmask16 mask, const __m512& scale, const __m512& bias,
                       const OutputClamp& clamp, const Int8Epilogue& epi, char* row, int64_t n,
                       const uint8_t* res_row = nullptr) {
  const uint8_t* res = res_row ? res_row + n : nullptr;
  if constexpr (KIND == Int8OutKind::i32) {
    _mm512_mask_storeu_epi32(reinterpret_cast<int32_t*>(row) + n, mask, acc);
  } else if constexpr (KIND == Int8OutKind::f32) {
    const __m512 y = epilogue_ps(acc, scale, bias, clamp, epi, res, mask);
    _mm512_mask_storeu_ps(reinterpret_cast<float*>(row) + n, mask, y);
  } else {
    constexpr bool kSigned = KIND == Int8OutKind::s8;
    __m512i q = requantize_epi32(acc, scale, bias, clamp, epi, res, mask);
    q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_set1_epi32(kSigned ? -128 : 0)),
                         _mm512_set1_epi32(kSigned ? 127 : 255));
    _mm_mask_storeu_epi8(row + n, mask, _mm512_cvtepi32_epi8(q));
  }
}

}  // namespace
}  // namespace avx512_vnni
}  // namespace pyfastcnn
