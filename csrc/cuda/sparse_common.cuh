// Host-side checks shared by the sparse conv launchers (sparse_csr_launch.cu,
// sparse24_launch.cu).
#pragma once
#include <climits>
#include <cstdint>

#include "check.cuh"

namespace pyfastcnn {
namespace cuda {
namespace sparse_common {

inline bool aligned(uintptr_t p, uintptr_t bytes) { return p % bytes == 0; }

inline void require_conv_sizes(int64_t n, int64_t c, int64_t h, int64_t w, int64_t oc,
                               int64_t kh, int64_t kw, int64_t oh, int64_t ow, int64_t stride_h,
                               int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                               int64_t dil_w, int64_t groups) {
  PYFASTCNN_CUDA_REQUIRE(n > 0 && c > 0 && h > 0 && w > 0 && oc > 0 && kh > 0 && kw > 0 &&
                             oh > 0 && ow > 0,
                         "sizes must be positive");
  PYFASTCNN_CUDA_REQUIRE(stride_h > 0 && stride_w > 0 && dil_h > 0 && dil_w > 0 && pad_h >= 0 &&
                             pad_w >= 0,
                         "stride/dilation must be positive and padding non-negative");
  PYFASTCNN_CUDA_REQUIRE(groups > 0 && c % groups == 0 && oc % groups == 0,
                         "groups must divide input and output channels");
  PYFASTCNN_CUDA_REQUIRE((oh - 1) * stride_h + (kh - 1) * dil_h < h + 2 * pad_h + stride_h &&
                             (ow - 1) * stride_w + (kw - 1) * dil_w < w + 2 * pad_w + stride_w,
                         "output size does not match the input size and geometry");
  PYFASTCNN_CUDA_REQUIRE(n * c * h * w < INT_MAX && n * oc * oh * ow < INT_MAX,
                         "tensors of 2^31 or more elements are not supported");
}

}  // namespace sparse_common
}  // namespace cuda
}  // namespace pyfastcnn
