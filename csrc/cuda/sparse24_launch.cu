// Launchers of the 2:4 sparse tensor-core conv kernel: re-check what the Python layer checked (the backstop against
// out-of-bounds access), pick the instantiation, launch on the caller's stream.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>

#include "check.cuh"
#include "sparse24_kernel.cuh"
#include "sparse_common.cuh"
#include "sparse_ops.h"

namespace pyfastcnn {
namespace cuda {

namespace {

using sparse_common::aligned;
using sparse_common::require_conv_sizes;

template <typename T, int kVec, int kMT>
void launch_24_tile(const sparse24::Params& p, int64_t groups, int64_t m_padded, uintptr_t input,
                    uintptr_t frags, uintptr_t meta, uintptr_t bias, uintptr_t output,
                    cudaStream_t stream) {
  using Plan = sparse24::Tile<kMT>;
  auto kernel = sparse24::sparse24_conv2d_kernel<T, kVec, kMT>;
  // Opt in to more than 48 KB of dynamic shared memory (per device; cheap to repeat).
  PYFASTCNN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            Plan::kSmemBytes));
  const dim3 grid((p.num_pixels + sparse24::kBN - 1) / sparse24::kBN,
                  static_cast<unsigned>(m_padded / Plan::kBM), static_cast<unsigned>(groups));
  PYFASTCNN_CUDA_REQUIRE(grid.y <= 65535 && grid.z <= 65535, "too many output channels");
  kernel<<<grid, sparse24::kThreads, Plan::kSmemBytes, stream>>>(
      as_ptr<const T>(input), as_ptr<const uint4>(frags), as_ptr<const uint32_t>(meta),
      as_ptr<const float>(bias), as_ptr<T>(output), p);
  PYFASTCNN_CUDA_CHECK_LAUNCH();
}

// 128 output channels per CTA where the padded rows come in 128s, else 64.
template <typename T, int kVec>
void launch_24(const sparse24::Params& p, int64_t groups, int64_t m_padded, uintptr_t input,
               uintptr_t frags, uintptr_t meta, uintptr_t bias, uintptr_t output,
               cudaStream_t stream) {
  if (m_padded % 128 == 0) {
    launch_24_tile<T, kVec, 4>(p, groups, m_padded, input, frags, meta, bias, output, stream);
  } else {
    launch_24_tile<T, kVec, 2>(p, groups, m_padded, input, frags, meta, bias, output, stream);
  }
}

}  // namespace

void sparse24_conv2d(int device, uintptr_t input, int dtype, uintptr_t frags, uintptr_t meta,
                     uintptr_t bias, uintptr_t output, int64_t n, int64_t c, int64_t h, int64_t w,
                     int64_t oc, int64_t kh, int64_t kw, int64_t oh, int64_t ow, int64_t stride_h,
                     int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                     int64_t dil_w, int64_t groups, int64_t m_padded, int64_t k_padded, bool relu,
                     uintptr_t stream) {
  require_conv_sizes(n, c, h, w, oc, kh, kw, oh, ow, stride_h, stride_w, pad_h, pad_w, dil_h,
                     dil_w, groups);
  PYFASTCNN_CUDA_REQUIRE(dtype == 1 || dtype == 2, "2:4 sparse conv needs float16 or bfloat16");
  PYFASTCNN_CUDA_REQUIRE(input && frags && meta && output, "null device pointer");
  const int64_t cg = c / groups;
  const int64_t k = kh * kw * cg;
  PYFASTCNN_CUDA_REQUIRE(cg % 4 == 0, "C/groups must be a multiple of 4 for 2:4 sparsity");
  PYFASTCNN_CUDA_REQUIRE(k_padded % sparse24::kBK == 0 && k_padded >= k && k_padded < k + 64,
                         "k_padded must be KH*KW*C/groups rounded up to a multiple of 64");
  PYFASTCNN_CUDA_REQUIRE(m_padded % 64 == 0 && m_padded >= oc / groups &&
                             m_padded < oc / groups + 128,
                         "m_padded must be OC/groups rounded up to a multiple of 64 or 128");
  const int vec = cg % 8 == 0 ? 8 : 4;
  PYFASTCNN_CUDA_REQUIRE(aligned(input, vec * 2) && aligned(frags, 16) && aligned(meta, 16) &&
                             aligned(output, 16),
                         "input, fragments, metadata and output must be 16-byte aligned");
  DeviceScope scope(device);
  sparse24::Params p;
  p.n = int(n); p.c = int(c); p.h = int(h); p.w = int(w); p.oc = int(oc);
  p.kh = int(kh); p.kw = int(kw); p.oh = int(oh); p.ow = int(ow);
  p.stride_h = int(stride_h); p.stride_w = int(stride_w);
  p.pad_h = int(pad_h); p.pad_w = int(pad_w); p.dil_h = int(dil_h); p.dil_w = int(dil_w);
  p.c_per_group = int(cg); p.oc_per_group = int(oc / groups);
  p.k = int(k);
  p.k_tiles = int(k_padded / sparse24::kBK);
  p.m_tiles16 = int(m_padded / 16);
  p.num_pixels = int(n * oh * ow);
  p.relu = relu;
  const cudaStream_t s = as_stream(stream);
  if (dtype == 1) {
    if (vec == 8) launch_24<__half, 8>(p, groups, m_padded, input, frags, meta, bias, output, s);
    else launch_24<__half, 4>(p, groups, m_padded, input, frags, meta, bias, output, s);
  } else {
    if (vec == 8) {
      launch_24<__nv_bfloat16, 8>(p, groups, m_padded, input, frags, meta, bias, output, s);
    } else {
      launch_24<__nv_bfloat16, 4>(p, groups, m_padded, input, frags, meta, bias, output, s);
    }
  }
}

}  // namespace cuda
}  // namespace pyfastcnn
