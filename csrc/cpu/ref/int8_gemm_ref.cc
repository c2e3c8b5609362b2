// Scalar INT8 GEMM and its epilogue: the ground truth. "Packing" is a dense copy of B; sums
// wrap modulo 2^32 like torch._int_mm (unsigned arithmetic, so the wrap is defined behaviour).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace ref {

size_t int8_packed_b_bytes(int64_t K, int64_t N) { return static_cast<size_t>(K * N); }

void int8_pack_b(const int8_t* b, int64_t ldb, int64_t K, int64_t N, void* packed) {
  int8_t* dst = static_cast<int8_t*>(packed);
  for (int64_t k = 0; k < K; ++k) std::memcpy(dst + k * N, b + k * ldb, N);
}

void int8_epilogue_row(const int32_t* acc, int64_t n0, int64_t count, const Int8Epilogue& epi,
                       void* c_row, int64_t m) {
  const uint8_t* residual = epi.residual ? epi.residual + m * epi.residual_ld : nullptr;
  for (int64_t j = 0; j < count; ++j) {
    const int64_t n = n0 + j;
    const int32_t v = static_cast<int32_t>(
        static_cast<uint32_t>(acc[j]) +
        static_cast<uint32_t>(epi.col_offset ? epi.col_offset[n] : 0));
    if (epi.kind == Int8OutKind::i32) {
      static_cast<int32_t*>(c_row)[n] = v;
      continue;
    }
    float y = static_cast<float>(v) * epi.scale[n] + (epi.bias ? epi.bias[n] : 0.0f);
    if (residual) {
      const int32_t r = epi.residual_signed ? static_cast<int8_t>(residual[n]) : residual[n];
      y += static_cast<float>(r - epi.residual_zero_point) * epi.residual_scale;
    }
    y = y < epi.clamp_min ? epi.clamp_min : (y > epi.clamp_max ? epi.clamp_max : y);
    if (epi.kind == Int8OutKind::f32) {
      static_cast<float*>(c_row)[n] = y;
      continue;
    }
    const bool is_signed = epi.kind == Int8OutKind::s8;
    const float lo = is_signed ? -128.0f : 0.0f, hi = is_signed ? 127.0f : 255.0f;
    // y is the code already (8-bit outputs: kernels.h). Clamped before the cast: out-of-range
    // float to int conversion is undefined.
    float q = std::nearbyint(y);
    q = q > lo ? (q < hi ? q : hi) : lo;
    if (is_signed) {
      static_cast<int8_t*>(c_row)[n] = static_cast<int8_t>(q);
    } else {
      static_cast<uint8_t*>(c_row)[n] = static_cast<uint8_t>(q);
    }
  }
}

void int8_gemm(const Int8GemmArgs& args) {
  const Int8GemmShape s = args.shape;
  const int8_t* b = static_cast<const int8_t*>(args.packed_b);
  const int64_t out_size = args.epi.kind == Int8OutKind::i32 || args.epi.kind == Int8OutKind::f32
                               ? 4 : 1;
  parallel_for(s.M, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> acc(s.N);
    for (int64_t m = begin; m < end; ++m) {
      std::fill(acc.begin(), acc.end(), 0u);
      for (int64_t k = 0; k < s.K; ++k) {
        const uint32_t av = args.a[m * args.lda + k];
        const int8_t* brow = b + k * s.N;
        for (int64_t n = 0; n < s.N; ++n) acc[n] += av * static_cast<uint32_t>(brow[n]);
      }
      int8_epilogue_row(reinterpret_cast<const int32_t*>(acc.data()), 0, s.N, args.epi,
                        static_cast<char*>(args.c) + m * args.ldc * out_size, m);
    }
  });
}

}  // namespace ref
}  // namespace pyfastcnn
