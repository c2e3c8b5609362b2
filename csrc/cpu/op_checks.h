// Precondition helpers shared by the native entry points (ops.cc, int8_ops.cc). Non-ISA code.
#pragma once
#include "pyfastcnn/kernels.h"
#include "pyfastcnn/ops.h"
#include "pyfastcnn/tensor_ref.h"

namespace pyfastcnn {
namespace detail {

// Leading dimension of a row-major 2-D tensor with unit inner stride.
int64_t row_major_ld(const TensorRef& t, const char* name);
void check_vector(const TensorRef& t, const char* name, DType dtype, int64_t length);
// Checks conv arguments and output shape [N, OC, OH, OW] against the input (any dtype).
Conv2dGeometry conv_geometry(const TensorRef& input, const TensorRef& output, int64_t OC,
                             int64_t C_per_group, int64_t KH, int64_t KW, const ConvParams& p);

}  // namespace detail
}  // namespace pyfastcnn
