// The float epilogue of the AVX2 kernels on 8 lanes: y = clamp(acc [* scale] + bias), used by the
// FP32 and sparse FP32 kernels, and under the INT8 epilogue (int8_epilogue_avx2.h).
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace pyfastcnn {
// Anonymous namespace (internal linkage) under pyfastcnn, as in epilogue_avx512.h: each
// including unit keeps its own copy compiled with its own flags (README, ISA files).
namespace {

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
