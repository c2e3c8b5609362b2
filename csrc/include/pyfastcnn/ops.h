// Validated native entry points, called by the bindings. Each checks its own preconditions
// (dtypes, ranks, shapes, index ranges) and throws std::invalid_argument before any kernel runs.
#pragma once
#include "pyfastcnn/tensor_ref.h"

namespace pyfastcnn {

struct ConvParams {
  int64_t stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups;
  float clamp_min, clamp_max;
};

// c[M,N] int32 = a[M,K] int8 @ b[K,N] int8. All three row-major with unit inner stride.
void int8_gemm(const TensorRef& a, const TensorRef& b, const TensorRef& c);

// output[N,OC,OH,OW] = clamp(conv2d(input, W) + bias). W in CSR (see kernels.h), shape
// [OC, C/groups, KH, KW]. input/output: any strides.
void sparse_conv2d_csr(const TensorRef& input, const TensorRef& row_ptr, const TensorRef& col_idx,
                       const TensorRef& values, const TensorRef* bias, int64_t C_per_group, int64_t KH,
                       int64_t KW, const ConvParams& p, const TensorRef& output);

// Same with a dense contiguous weight [OC, C/groups, KH, KW] (conv with folded BN + activation).
void conv2d_dense(const TensorRef& input, const TensorRef& weight, const TensorRef* bias,
                  const ConvParams& p, const TensorRef& output);

}  // namespace pyfastcnn
