// Entry point of the fused conv: checks the arguments again (the backstop behind the Python
// checks), picks the kernel, launches it on the caller's stream. Also the launchers of the
// SIMT kernel and of the direct kernel (the tensor-core one is in conv_tc_launch.cu).
#include <algorithm>
#include <climits>
#include <string>

#include "check.cuh"
#include "conv_common.cuh"
#include "conv_direct_kernel.cuh"
#include "conv_ops.h"
#include "conv_simt_kernel.cuh"

namespace pyfastcnn {
namespace cuda {
namespace conv {

const char* launch_simt(const Params& p, int dtype, cudaStream_t stream) {
  const dim3 grid((p.m + kSimtBM - 1) / kSimtBM, (p.ocg + kSimtBN - 1) / kSimtBN, p.groups);
  switch (dtype) {
    case 0: conv_simt_kernel<float><<<grid, kSimtThreads, 0, stream>>>(p); break;
    case 2: conv_simt_kernel<__half><<<grid, kSimtThreads, 0, stream>>>(p); break;
    default: conv_simt_kernel<__nv_bfloat16><<<grid, kSimtThreads, 0, stream>>>(p); break;
  }
  PYFASTCNN_CUDA_CHECK_LAUNCH();
  return "simt_128x64";
}

const char* launch_direct(const Params& p, int dtype, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t total = int64_t(p.m) * p.oc;
  const int64_t blocks =
      std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(sm_count()) * 64);
  const unsigned grid = static_cast<unsigned>(std::max<int64_t>(blocks, 1));
  switch (dtype) {
    case 0: conv_direct_kernel<float><<<grid, kThreads, 0, stream>>>(p); break;
    case 2: conv_direct_kernel<__half><<<grid, kThreads, 0, stream>>>(p); break;
    default: conv_direct_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(p); break;
  }
  PYFASTCNN_CUDA_CHECK_LAUNCH();
  return "direct";
}

}  // namespace conv

std::string conv2d_bias_act(int device, uintptr_t x, uintptr_t w, uintptr_t bias, uintptr_t y,
                            int dtype, int n, int h, int w_in, int c, int oc, int kh, int kw,
                            int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h,
                            int dilation_w, int groups, int oh, int ow, float clamp_min,
                            float clamp_max, uintptr_t stream, const std::string& algo) {
  PYFASTCNN_CUDA_REQUIRE(dtype == 0 || dtype == 2 || dtype == 3,
                         "conv2d_bias_act: dtype must be float32 (0), float16 (2) or bfloat16 (3)");
  PYFASTCNN_CUDA_REQUIRE(algo == "auto" || algo == "direct" || algo == "implicit_gemm",
                         "conv2d_bias_act: algo must be 'auto', 'direct' or 'implicit_gemm'");
  PYFASTCNN_CUDA_REQUIRE(x && w && y, "conv2d_bias_act: null input, weight or output pointer");
  PYFASTCNN_CUDA_REQUIRE(n > 0 && h > 0 && w_in > 0 && c > 0 && oc > 0 && kh > 0 && kw > 0 &&
                             oh > 0 && ow > 0,
                         "conv2d_bias_act: sizes must be positive");
  PYFASTCNN_CUDA_REQUIRE(stride_h > 0 && stride_w > 0 && dilation_h > 0 && dilation_w > 0 &&
                             pad_h >= 0 && pad_w >= 0,
                         "conv2d_bias_act: stride/dilation must be positive, padding non-negative");
  PYFASTCNN_CUDA_REQUIRE(groups > 0 && c % groups == 0 && oc % groups == 0,
                         "conv2d_bias_act: groups must divide input and output channels");
  // Everything but whole-tensor offsets is computed in int.
  PYFASTCNN_CUDA_REQUIRE(int64_t(h) * w_in * c < INT_MAX && int64_t(n) * oh * ow < INT_MAX &&
                             int64_t(kh) * kw * c < INT_MAX &&
                             int64_t(oc) * kh * kw * c < INT_MAX &&
                             int64_t(oh) * stride_h + int64_t(kh) * dilation_h < (1 << 28) &&
                             int64_t(ow) * stride_w + int64_t(kw) * dilation_w < (1 << 28) &&
                             pad_h < (1 << 28) && pad_w < (1 << 28),
                         "conv2d_bias_act: tensor too large for 32-bit indexing");
  DeviceScope scope(device);
  const cudaStream_t s = as_stream(stream);

  conv::Params p{};
  p.x = as_ptr<const void>(x);
  p.w = as_ptr<const void>(w);
  p.bias = bias ? as_ptr<const float>(bias) : nullptr;
  p.y = as_ptr<void>(y);
  p.n = n; p.h = h; p.w_in = w_in; p.c = c;
  p.oc = oc; p.kh = kh; p.kw = kw;
  p.stride_h = stride_h; p.stride_w = stride_w; p.pad_h = pad_h; p.pad_w = pad_w;
  p.dil_h = dilation_h; p.dil_w = dilation_w;
  p.groups = groups; p.oh = oh; p.ow = ow;
  p.cg = c / groups; p.ocg = oc / groups; p.k = kh * kw * p.cg;
  p.m = n * oh * ow;
  p.clamp_min = clamp_min; p.clamp_max = clamp_max;

  // The tiled kernels put groups on grid.z (at most 65535).
  if (algo == "direct" || groups > 65535) return conv::launch_direct(p, dtype, s);
  if (dtype == 0) {
    // The tiled kernel wastes most of a 64-wide tile on narrow groups (depthwise): direct there.
    if (algo == "implicit_gemm" || p.ocg >= 16) return conv::launch_simt(p, dtype, s);
    return conv::launch_direct(p, dtype, s);
  }
  const bool tc_ok = p.cg % 8 == 0 && x % 16 == 0 && w % 16 == 0;
  if (algo == "implicit_gemm") {
    PYFASTCNN_CUDA_REQUIRE(tc_ok, "conv2d_bias_act: the tensor-core kernel needs channels per "
                                  "group % 8 == 0 and 16-byte aligned input and weight");
  } else if (!tc_ok || p.ocg < 8) {
    // No 16-byte chunks (C = 3 stems, odd channels): the CUDA-core tiles, FP32 sums.
    if (p.ocg >= 16) return conv::launch_simt(p, dtype, s);
    return conv::launch_direct(p, dtype, s);
  }
  return dtype == 2 ? conv::launch_tc_f16(p, s) : conv::launch_tc_bf16(p, s);
}

}  // namespace cuda
}  // namespace pyfastcnn
