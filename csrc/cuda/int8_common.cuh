// Device-side pieces shared by the INT8 kernels: the requantization epilogue (the same math as
// the CPU ops, see pyfastcnn/ops/quantized.py and csrc/cpu/int8_ops.cc make_epilogue) and the
// geometry that turns a GEMM row/column index into an activation byte offset.
#pragma once
#include <cstdint>

#include "check.cuh"
#include "int8_ops.h"

namespace pyfastcnn {
namespace cuda {
namespace int8 {

// Kernel-side epilogue: pointers typed, per-launch constants already in output units.
struct Epilogue {
  int kind;                  // Int8OutKind: 0 i32, 1 f32, 2 s8, 3 u8
  const int32_t* col_sums;   // [channels] or null: acc -= zp * col_sums[n] (wrapping)
  uint32_t zp;               // activation zero point as the kernel reads the codes
  float x_scale;             // channel scale = x_scale * w_scale[n] (* out_inv for 8-bit)
  const float* w_scale;      // [channels] (float and 8-bit outputs)
  const float* bias;         // [channels] or null
  float out_inv;             // 1 / out_scale (8-bit), 1 for float
  float out_zp;              // 8-bit output zero point, 0 for float
  float lo, hi;              // clamp bounds, in output units (8-bit: bound * out_inv + out_zp)
  const uint8_t* residual;   // same layout as the output (channels-last), or null
  bool residual_signed;
  float residual_scale;      // residual_scale * out_inv
  int32_t residual_zp;
};

inline Epilogue make_epilogue(const EpilogueArgs& e) {
  PYFASTCNN_CUDA_REQUIRE(e.out_kind >= 0 && e.out_kind <= 3, "out_kind must be 0..3");
  PYFASTCNN_CUDA_REQUIRE(e.out_kind == 0 || e.w_scale != 0, "w_scale is required unless int32 out");
  PYFASTCNN_CUDA_REQUIRE(e.residual == 0 || e.out_kind != 0,
                         "a residual add needs float or 8-bit output");
  PYFASTCNN_CUDA_REQUIRE(e.out_kind < 2 || e.out_scale > 0.0f, "out_scale must be positive");
  Epilogue k;
  k.kind = e.out_kind;
  k.col_sums = reinterpret_cast<const int32_t*>(e.col_sums);
  k.zp = static_cast<uint32_t>(e.x_zero_point);
  k.x_scale = e.x_scale;
  k.w_scale = reinterpret_cast<const float*>(e.w_scale);
  k.bias = reinterpret_cast<const float*>(e.bias);
  const bool eight_bit = e.out_kind == 2 || e.out_kind == 3;
  // The same float32 operations, in the same order, as the CPU's make_epilogue.
  k.out_inv = eight_bit ? 1.0f / e.out_scale : 1.0f;
  k.out_zp = eight_bit ? static_cast<float>(e.out_zero_point) : 0.0f;
  k.lo = eight_bit ? e.clamp_min * k.out_inv + k.out_zp : e.clamp_min;
  k.hi = eight_bit ? e.clamp_max * k.out_inv + k.out_zp : e.clamp_max;
  k.residual = reinterpret_cast<const uint8_t*>(e.residual);
  k.residual_signed = e.residual_signed;
  k.residual_scale = e.residual_scale * k.out_inv;
  k.residual_zp = e.residual_zero_point;
  return k;
}

// The raw sum of channel n with the zero-point correction (wrapping int32).
__device__ __forceinline__ int32_t corrected_sum(const Epilogue& e, int n, uint32_t acc) {
  if (e.col_sums) acc -= e.zp * static_cast<uint32_t>(__ldg(e.col_sums + n));
  return static_cast<int32_t>(acc);
}

// y of channel n (float out: the value; 8-bit out: the code before rounding), clamped.
// `index` locates the residual code (laid out like the output).
__device__ __forceinline__ float requantize(const Epilogue& e, int n, int32_t v, int64_t index) {
  // Rounded operation by operation (no FMA contraction), as the scalar CPU reference.
  float scale = __fmul_rn(e.x_scale, __ldg(e.w_scale + n));
  float bias = e.bias ? __ldg(e.bias + n) : 0.0f;
  if (e.kind != 1) {
    scale = __fmul_rn(scale, e.out_inv);
    bias = __fadd_rn(__fmul_rn(bias, e.out_inv), e.out_zp);
  }
  float y = __fadd_rn(__fmul_rn(static_cast<float>(v), scale), bias);
  if (e.residual) {
    const int32_t r = e.residual_signed ? static_cast<int32_t>(
                                              static_cast<int8_t>(e.residual[index]))
                                        : static_cast<int32_t>(e.residual[index]);
    y = __fadd_rn(y, __fmul_rn(static_cast<float>(r - e.residual_zp), e.residual_scale));
  }
  return y < e.lo ? e.lo : (y > e.hi ? e.hi : y);
}

// The 8-bit code of y: rintf rounds half to even (std::nearbyint in the default rounding
// mode), then saturation; the result is exact in an int.
__device__ __forceinline__ int to_code(float y, bool is_signed) {
  const float q = rintf(y);
  return is_signed ? static_cast<int>(fminf(fmaxf(q, -128.0f), 127.0f))
                   : static_cast<int>(fminf(fmaxf(q, 0.0f), 255.0f));
}

// One output element: `acc` is the raw integer sum of channel `n`, written at out[index]
// (index counts elements of the output's type; the residual shares the index).
__device__ __forceinline__ void store_output(const Epilogue& e, void* out, int64_t index, int n,
                                             uint32_t acc) {
  const int32_t v = corrected_sum(e, n, acc);
  if (e.kind == 0) {
    static_cast<int32_t*>(out)[index] = v;
    return;
  }
  const float y = requantize(e, n, v, index);
  if (e.kind == 1) {
    static_cast<float*>(out)[index] = y;
  } else if (e.kind == 2) {
    static_cast<int8_t*>(out)[index] = static_cast<int8_t>(to_code(y, true));
  } else {
    static_cast<uint8_t*>(out)[index] = static_cast<uint8_t>(to_code(y, false));
  }
}

template <int kBytes>
__device__ __forceinline__ bool aligned_to(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & (kBytes - 1)) == 0;
}

// Two adjacent outputs of one row, channels n and n + 1 at out[index], out[index + 1]: one
// vector store when the address allows it (full 32-byte sectors for a warp's int32 rows).
__device__ __forceinline__ void store_output_pair(const Epilogue& e, void* out, int64_t index,
                                                  int n, uint32_t acc0, uint32_t acc1) {
  const int32_t v0 = corrected_sum(e, n, acc0), v1 = corrected_sum(e, n + 1, acc1);
  if (e.kind == 0) {
    int32_t* p = static_cast<int32_t*>(out) + index;
    if (aligned_to<8>(p)) {
      *reinterpret_cast<int2*>(p) = make_int2(v0, v1);
    } else {
      p[0] = v0;
      p[1] = v1;
    }
    return;
  }
  const float y0 = requantize(e, n, v0, index), y1 = requantize(e, n + 1, v1, index + 1);
  if (e.kind == 1) {
    float* p = static_cast<float*>(out) + index;
    if (aligned_to<8>(p)) {
      *reinterpret_cast<float2*>(p) = make_float2(y0, y1);
    } else {
      p[0] = y0;
      p[1] = y1;
    }
    return;
  }
  const bool is_signed = e.kind == 2;
  const int q0 = to_code(y0, is_signed), q1 = to_code(y1, is_signed);
  uint8_t* p = static_cast<uint8_t*>(out) + index;
  if (aligned_to<2>(p)) {
    *reinterpret_cast<uchar2*>(p) = make_uchar2(static_cast<unsigned char>(q0 & 0xFF),
                                                static_cast<unsigned char>(q1 & 0xFF));
  } else {
    p[0] = static_cast<uint8_t>(q0 & 0xFF);
    p[1] = static_cast<uint8_t>(q1 & 0xFF);
  }
}

// Where the A operand of the implicit GEMM lives. Row m is output pixel (img, oh, ow) with
// m = (img * OH + oh) * OW + ow; column k is (tap, c) with k = tap * cgp + c and tap = kh * KW +
// kw. A plain GEMM is the case OH = OW = KW = 1, img_stride = lda, cgp = K, tap strides 0.
struct AGeometry {
  int OH, OW, KW, cgp;
  int64_t img_stride, oh_stride, ow_stride;  // bytes per image, per output row, per output column
  int64_t tap_h_stride, tap_w_stride;        // bytes per kernel row, per kernel column
  int64_t group_stride;                      // bytes between groups' channel blocks
};

__device__ __forceinline__ int64_t a_row_offset(const AGeometry& g, int m) {
  const int ow = m % g.OW;
  const int t = m / g.OW;
  const int oh = t % g.OH;
  const int img = t / g.OH;
  return img * g.img_stride + oh * g.oh_stride + ow * g.ow_stride;
}

__device__ __forceinline__ int64_t a_col_offset(const AGeometry& g, int k) {
  const int tap = k / g.cgp;
  const int c = k - tap * g.cgp;
  const int kh = tap / g.KW;
  const int kw = tap - kh * g.KW;
  return kh * g.tap_h_stride + kw * g.tap_w_stride + c;
}

// A thread's column position (tap kh, kw; channel c) walked forward one K tile at a time:
// the pipeline loads tiles in order, so the divisions of a_col_offset happen once per kernel.
struct KCursor {
  int c, kw, kh;
  __device__ __forceinline__ void start(const AGeometry& g, int k) {
    const int tap = k / g.cgp;
    c = k - tap * g.cgp;
    kh = tap / g.KW;
    kw = tap - kh * g.KW;
  }
  __device__ __forceinline__ int64_t offset(const AGeometry& g) const {
    return kh * g.tap_h_stride + kw * g.tap_w_stride + c;
  }
  __device__ __forceinline__ void advance(const AGeometry& g, int step) {
    c += step;
    while (c >= g.cgp) {
      c -= g.cgp;
      if (++kw == g.KW) {
        kw = 0;
        ++kh;
      }
    }
  }
};

}  // namespace int8
}  // namespace cuda
}  // namespace pyfastcnn
