// The float epilogue of every AVX-512 kernel on 16 lanes: y = clamp(acc [* scale] + bias), used
// by the FP32, BF16, depthwise and sparse FP32 kernels and by the INT8 VNNI epilogue before its
// 8-bit conversion. Included by *_avx512.cc, *_avx512vnni.cc and *_avx512bf16.cc units, so it
// uses AVX-512F intrinsics only.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace pyfastcnn {
// Anonymous namespace (internal linkage) under pyfastcnn, where every ISA namespace finds it:
// each including unit keeps its own copy compiled with its own flags (README, ISA files).
namespace {

struct Epilogue512 {
  __m512 lo, hi;

  Epilogue512(float clamp_min, float clamp_max)
      : lo(_mm512_set1_ps(clamp_min)), hi(_mm512_set1_ps(clamp_max)) {}

  // The clamp takes y as the second operand of max/min: they return it when it is NaN (and
  // -0.0 against a 0 bound, as the scalar references do).
  __m512 clamp(__m512 y) const { return _mm512_min_ps(hi, _mm512_max_ps(lo, y)); }
  __m512 apply(__m512 acc, __m512 bias) const { return clamp(_mm512_add_ps(acc, bias)); }
  // One rounding (FMA): the INT8 outputs depend on it bit for bit.
  __m512 apply(__m512 acc, __m512 scale, __m512 bias) const {
    return clamp(_mm512_fmadd_ps(acc, scale, bias));
  }

  // bias[n ..] (lanes `mask`, others 0), or zeros when there is no bias.
  static __m512 load_bias(const float* bias, int64_t n, __mmask16 mask) {
    return bias ? _mm512_maskz_loadu_ps(mask, bias + n) : _mm512_setzero_ps();
  }
  static __m512 load_bias(const float* bias, int64_t n) {
    return bias ? _mm512_loadu_ps(bias + n) : _mm512_setzero_ps();
  }
  // bias[n] in every lane (one channel per vector), or zeros.
  static __m512 broadcast_bias(const float* bias, int64_t n) {
    return _mm512_set1_ps(bias ? bias[n] : 0.0f);
  }
};

}  // namespace
}  // namespace pyfastcnn
