// The conv that handles every geometry: one thread per output element (NHWC order, so a warp
// writes consecutive channels of one pixel and reads that pixel's inputs as a broadcast), FP32
// accumulation, fused bias + clamp. Used for what the tiled kernels do not cover: Cg % 8 != 0 in
// float16/bfloat16 (e.g. C = 3 stems), depthwise and narrow groups.
#pragma once
#include "conv_common.cuh"

namespace pyfastcnn {
namespace cuda {
namespace conv {

template <typename T>
__global__ void __launch_bounds__(256) conv_direct_kernel(const Params p) {
  const T* const x = static_cast<const T*>(p.x);
  const T* const w = static_cast<const T*>(p.w);
  T* const y = static_cast<T*>(p.y);
  const int64_t total = static_cast<int64_t>(p.m) * p.oc;
  const int ohw = p.oh * p.ow;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int o = static_cast<int>(idx % p.oc);
    const int m = static_cast<int>(idx / p.oc);
    const int img = m / ohw, rem = m - img * ohw;
    const int oh = rem / p.ow, ow = rem - oh * p.ow;
    const int group = o / p.ocg;
    const T* const x_img = x + static_cast<int64_t>(img) * p.h * p.w_in * p.c + group * p.cg;
    const T* const w_o = w + static_cast<int64_t>(o) * p.k;
    float acc = 0.f;
    for (int r = 0; r < p.kh; ++r) {
      const int ih = oh * p.stride_h - p.pad_h + r * p.dil_h;
      if (static_cast<unsigned>(ih) >= static_cast<unsigned>(p.h)) continue;
      for (int s = 0; s < p.kw; ++s) {
        const int iw = ow * p.stride_w - p.pad_w + s * p.dil_w;
        if (static_cast<unsigned>(iw) >= static_cast<unsigned>(p.w_in)) continue;
        const T* const xp = x_img + (ih * p.w_in + iw) * p.c;
        const T* const wp = w_o + (r * p.kw + s) * p.cg;
        for (int ci = 0; ci < p.cg; ++ci) acc = fmaf(to_float(xp[ci]), to_float(wp[ci]), acc);
      }
    }
    const float b = p.bias ? p.bias[o] : 0.f;
    y[idx] = from_float<T>(clamp_value(acc + b, p.clamp_min, p.clamp_max));
  }
}

}  // namespace conv
}  // namespace cuda
}  // namespace pyfastcnn
