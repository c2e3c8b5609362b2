// Argument structs and per-ISA kernel prototypes. Plain data only: this header is included by
// ISA units, so it must not define inline functions. Preconditions are checked in ops.cc before
// any kernel runs; kernels trust these structs.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pyfastcnn {

// ---- INT8 GEMM: C[M,N] (int32) = A[M,K] (int8) x B[K,N] (int8), exact modulo 2^32 -------------
// Row-major with leading dimensions lda, ldb, ldc (unit inner stride). B is packed once into an
// ISA-specific layout (pack), then multiplied (gemm_packed).
struct Int8GemmShape {
  int64_t M, N, K;
};
using Int8PackedBytesFn = size_t (*)(int64_t K, int64_t N);
using Int8PackBFn = void (*)(const int8_t* b, int64_t ldb, int64_t K, int64_t N, void* packed);
using Int8GemmPackedFn = void (*)(const int8_t* a, int64_t lda, const void* packed_b, int32_t* c,
                                  int64_t ldc, Int8GemmShape shape);

// ---- direct 2-D convolution, float32 ----------------------------------------------------------
// Input and output are addressed through element strides (NCHW, channels_last or any view).
// Output size is given explicitly (so asymmetric "same" padding needs no bottom/right pad);
// taps that fall outside the input read zero. Epilogue: out = clamp(acc + bias, lo, hi), with
// NaN passed through.
struct Conv2dGeometry {
  int64_t N, C, H, W;      // input
  int64_t OC, OH, OW;      // output
  int64_t KH, KW;
  int64_t stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups;
};
struct Conv2dEpilogue {
  const float* bias;  // [OC] or null
  float clamp_min, clamp_max;
};
struct Conv2dIO {
  const float* input;
  int64_t in_strides[4];  // N, C, H, W
  float* output;
  int64_t out_strides[4];
};
// Sparse weight, CSR over output channels: row oc holds col_idx[row_ptr[oc] .. row_ptr[oc+1])
// with col = (ci_in_group * KH + kh) * KW + kw.
struct CsrWeight {
  const int64_t* row_ptr;
  const int32_t* col_idx;
  const float* values;
};
using SparseConv2dCsrFn = void (*)(const Conv2dIO& io, const Conv2dGeometry& g, const CsrWeight& w,
                                   const Conv2dEpilogue& epi);
// Dense weight [OC, C/groups, KH, KW], contiguous.
using Conv2dDenseFn = void (*)(const Conv2dIO& io, const Conv2dGeometry& g, const float* weight,
                               const Conv2dEpilogue& epi);

#define PYFASTCNN_DECLARE_INT8_GEMM                                                       \
  size_t int8_packed_b_bytes(int64_t K, int64_t N);                                      \
  void int8_pack_b(const int8_t* b, int64_t ldb, int64_t K, int64_t N, void* packed);    \
  void int8_gemm_packed(const int8_t* a, int64_t lda, const void* packed_b, int32_t* c, \
                        int64_t ldc, Int8GemmShape shape);

namespace ref {
PYFASTCNN_DECLARE_INT8_GEMM
void sparse_conv2d_csr(const Conv2dIO& io, const Conv2dGeometry& g, const CsrWeight& w,
                       const Conv2dEpilogue& epi);
void conv2d_dense(const Conv2dIO& io, const Conv2dGeometry& g, const float* weight,
                  const Conv2dEpilogue& epi);
}  // namespace ref
namespace avx2 {
PYFASTCNN_DECLARE_INT8_GEMM
}
namespace avx512 {
PYFASTCNN_DECLARE_INT8_GEMM
}
namespace avx512_vnni {
PYFASTCNN_DECLARE_INT8_GEMM
}

}  // namespace pyfastcnn
