// The float epilogue of the AVX2 kernels on 8 lanes: y = clamp(acc [* scale] + bias), used by the
// FP32 and sparse FP32 kernels, and under the INT8 epilogue (int8_epilogue_avx2.h).
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace pyfastcnn {
// Anonymous namespace (internal linkage) under pyfastcnn, as in epilogue_avx512.h: each
// including unit keeps its own copy compiled with its own flags (README, ISA files).
namespace {

// Stores lanes [0, n) of v (n <= 0: nothing). vmaskmovps stores are microcoded on AMD Zen (a
// dozen cycles each: one per output row in the sparse FP32 kernel was 15% of its time on Zen 3),
// so full vectors use a plain store and a partial one 4 + 2 + 1 lanes.
inline void store_lanes(float* dst, __m256 v, int n) {
  if (n >= 8) {
    _mm256_storeu_ps(dst, v);
    return;
  }
  __m128 part = _mm256_castps256_ps128(v);
  if (n >= 4) {
    _mm_storeu_ps(dst, part);
    part = _mm256_extractf128_ps(v, 1);
    dst += 4;
    n -= 4;
  }
  if (n >= 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(dst), part);
    part = _mm_movehl_ps(part, part);
    dst += 2;
    n -= 2;
  }
  if (n >= 1) _mm_store_ss(dst, part);
}

struct Epilogue256 {
  __m256 lo, hi;

  Epilogue256(float clamp_min, float clamp_max)
      : lo(_mm256_set1_ps(clamp_min)), hi(_mm256_set1_ps(clamp_max)) {}

  // y as the second operand of max/min: they return it when it is NaN.
  __m256 clamp(__m256 y) const { return _mm256_min_ps(hi, _mm256_max_ps(lo, y)); }
  __m256 apply(__m256 acc, __m256 bias) const { return clamp(_mm256_add_ps(acc, bias)); }
  __m256 apply(__m256 acc, __m256 scale, __m256 bias) const {
    return clamp(_mm256_fmadd_ps(acc, scale, bias));
  }

  // bias[n ..] (lanes whose mask sign bit is set, others 0), or zeros when there is no bias.
  static __m256 load_bias(const float* bias, int64_t n, __m256i mask) {
    return bias ? _mm256_maskload_ps(bias + n, mask) : _mm256_setzero_ps();
  }
  // bias[n] in every lane (one channel per vector), or zeros.
  static __m256 broadcast_bias(const float* bias, int64_t n) {
    return _mm256_set1_ps(bias ? bias[n] : 0.0f);
  }
};

}  // namespace
}  // namespace pyfastcnn
