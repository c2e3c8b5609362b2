// Direct sparse convolution (unstructured / CSR weights) on CUDA cores, NCHW.
//
// Work split: a CTA owns kPix * 128 consecutive output pixels (flattened over N*OH*OW) and
// kRows consecutive output channels. Every thread keeps kPix pixels (strided by the block size,
// so each load instruction of a warp reads 32 neighbouring pixels: coalesced for stride 1) and
// walks the non-zeros of one output channel after another. The walk is warp-uniform (all lanes
// read the same offset/value: one broadcast transaction), so rows with different non-zero counts
// cost no divergence; a CTA's kRows rows average out their lengths.
//
// Padding: each thread precomputes, per pixel, a bit mask of the kernel taps (kh * KW + kw) that
// land inside the image, so the inner loop is a shift, a predicated load and an FMA. Kernels with
// more than 64 taps use the explicit bounds check instead (kMaskBits == 0).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace pyfastcnn {
namespace cuda {
namespace sparse_csr {

constexpr int kThreads = 128;
constexpr int kPix = 4;   // output pixels per thread
constexpr int kRows = 8;  // output channels per CTA

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

struct CsrParams {
  int n, c, h, w, oc, kh, kw, oh, ow;
  int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int c_per_group, oc_per_group;
  int num_pixels;  // n * oh * ow
  bool relu;
};

template <int kMaskBits>
struct TapMask {
  using type = uint32_t;
};
template <>
struct TapMask<64> {
  using type = unsigned long long;
};

// offsets[e] = ci * H * W + kh * dil_h * W + kw * dil_w (input-layout offset of non-zero e within
// its group's channels), taps[e] = kh * KW + kw.
template <typename T, int kMaskBits>
__global__ void __launch_bounds__(kThreads)
    sparse_conv2d_csr_kernel(const T* __restrict__ input, const int* __restrict__ row_ptr,
                             const int* __restrict__ offsets, const int* __restrict__ taps,
                             const float* __restrict__ values, const float* __restrict__ bias,
                             T* __restrict__ output, CsrParams p) {
  using Mask = typename TapMask<kMaskBits>::type;
  const int hw = p.h * p.w;
  const int ohw = p.oh * p.ow;
  // Per pixel: offset of its (ih0, iw0) corner in the image, the corner itself, output offset.
  int corner[kPix], ih0[kPix], iw0[kPix], out_at[kPix];
  Mask mask[kPix];
  bool live[kPix];
#pragma unroll
  for (int j = 0; j < kPix; ++j) {
    const int pix = blockIdx.x * (kThreads * kPix) + j * kThreads + threadIdx.x;
    live[j] = pix < p.num_pixels;
    const int q = live[j] ? pix : 0;
    const int img = q / ohw;
    const int rest = q - img * ohw;
    const int oy = rest / p.ow;
    const int ox = rest - oy * p.ow;
    ih0[j] = oy * p.stride_h - p.pad_h;
    iw0[j] = ox * p.stride_w - p.pad_w;
    corner[j] = img * p.c * hw + ih0[j] * p.w + iw0[j];
    out_at[j] = img * p.oc * ohw + rest;
    Mask m = 0;
    if (kMaskBits > 0 && live[j]) {
      Mask cols = 0;
      for (int x = 0; x < p.kw; ++x) {
        const int iw = iw0[j] + x * p.dil_w;
        if (iw >= 0 && iw < p.w) cols |= Mask(1) << x;
      }
      for (int y = 0; y < p.kh; ++y) {
        const int ih = ih0[j] + y * p.dil_h;
        if (ih >= 0 && ih < p.h) m |= cols << (y * p.kw);
      }
    }
    mask[j] = m;
  }

  const int oc_begin = blockIdx.y * kRows;
  const int oc_end = min(p.oc, oc_begin + kRows);
  for (int oc = oc_begin; oc < oc_end; ++oc) {
    const T* __restrict__ x = input + (oc / p.oc_per_group) * p.c_per_group * hw;
    float acc[kPix];
#pragma unroll
    for (int j = 0; j < kPix; ++j) acc[j] = 0.f;
    const int end = __ldg(row_ptr + oc + 1);
#pragma unroll 4
    for (int e = __ldg(row_ptr + oc); e < end; ++e) {
      const int off = __ldg(offsets + e);
      const int tap = __ldg(taps + e);
      const float v = __ldg(values + e);
      if (kMaskBits > 0) {
#pragma unroll
        for (int j = 0; j < kPix; ++j) {
          if ((mask[j] >> tap) & 1) acc[j] = fmaf(v, to_float(x[corner[j] + off]), acc[j]);
        }
      } else {
        const int y = tap / p.kw;
        const int dy = y * p.dil_h;
        const int dx = (tap - y * p.kw) * p.dil_w;
#pragma unroll
        for (int j = 0; j < kPix; ++j) {
          const bool in = live[j] && unsigned(ih0[j] + dy) < unsigned(p.h) &&
                          unsigned(iw0[j] + dx) < unsigned(p.w);
          if (in) acc[j] = fmaf(v, to_float(x[corner[j] + off]), acc[j]);
        }
      }
    }
    const float b = bias != nullptr ? __ldg(bias + oc) : 0.f;
#pragma unroll
    for (int j = 0; j < kPix; ++j) {
      if (!live[j]) continue;
      float r = acc[j] + b;
      if (p.relu) r = r < 0.f ? 0.f : r;  // not fmaxf: NaN must stay NaN
      output[out_at[j] + oc * ohw] = from_float<T>(r);
    }
  }
}

}  // namespace sparse_csr
}  // namespace cuda
}  // namespace pyfastcnn
