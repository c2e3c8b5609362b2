// Precondition helpers shared by the native entry points (ops.cc, int8_ops.cc,
// elementwise_ops.cc, pool_ops.cc). Non-ISA code.
#pragma once
#include "pyfastcnn/isa.h"
#include "pyfastcnn/kernels.h"
#include "pyfastcnn/ops.h"
#include "pyfastcnn/tensor_ref.h"

namespace pyfastcnn {
namespace detail {

// Leading dimension of a row-major 2-D tensor with unit inner stride.
int64_t row_major_ld(const TensorRef& t, const char* name);
void check_vector(const TensorRef& t, const char* name, DType dtype, int64_t length);
// A packed weight's layout belongs to the kernel of one ISA level: refuses a layout above the
// selected level ("repack it") or one that is not the level of the kernel that would run
// (has_kernel false: no such kernel at all). `what` names the kernel in the message.
void check_packed_layout(Isa layout, bool has_kernel, Isa kernel_isa, const char* what);
// A packed weight buffer: 1-D, contiguous, `elems` elements of `dtype`, 64-byte aligned.
void check_packed_buffer(const TensorRef& packed, DType dtype, int64_t elems);
// A tensor of uint8 or int8 codes (any rank); `dtype` is the one expected (t.dtype: either).
void check_codes(const TensorRef& t, const char* name, DType dtype);
// 4-D [N, C, H, W] laid out as dense NHWC (size-1 dims may have any stride).
bool is_channels_last_4d(const TensorRef& t);
// Checks conv arguments and output shape [N, OC, OH, OW] against the input (any dtype).
Conv2dGeometry conv_geometry(const TensorRef& input, const TensorRef& output, int64_t OC,
                             int64_t C_per_group, int64_t KH, int64_t KW, const ConvParams& p);

}  // namespace detail
}  // namespace pyfastcnn
