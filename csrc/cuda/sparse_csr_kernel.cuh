// Direct sparse convolution (unstructured / CSR weights) on CUDA cores, NCHW.
//
// Non-zero e of the CSR weight is described by taps[e] = ci << 16 | kh << 8 | kw (ci within the
// group) and values[e] (float32).
//
// Two kernels:
// * sparse_conv2d_csr_tiled_kernel (the fast one): a CTA owns a pixel tile (whole output rows of
//   one image, or several whole small images) and kTiledRows output channels of one group. It
//   walks the input channels in chunks: stages the chunk's input patch (zero-padded, converted to
//   float) in shared memory, then for each of its output channels walks the non-zeros of that
//   chunk (chunk_ptr [OC][chunks + 1]) with one warp-uniform 8-byte load each (entries: the
//   non-zero's offset in the patch, precomputed on the host for the tile plan, and its value's
//   bits), each thread accumulating kPix pixels x kTiledRows channels in registers. No bounds checks in the inner loop (the patch
//   holds the padding), one conflict-free shared load per FMA for stride 1, and each staged
//   input element serves kTiledRows output channels.
// * sparse_conv2d_csr_kernel (fallback for geometries whose patch does not fit): reads the input
//   straight from global memory (L1), as described below.
//
// Fallback work split: a CTA owns kPix * 128 consecutive output pixels (flattened over N*OH*OW) and
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

template <typename T, int kMaskBits>
__global__ void __launch_bounds__(kThreads)
    sparse_conv2d_csr_kernel(const T* __restrict__ input, const int* __restrict__ row_ptr,
                             const int* __restrict__ taps, const float* __restrict__ values,
                             const float* __restrict__ bias, T* __restrict__ output,
                             CsrParams p) {
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
      const int packed = __ldg(taps + e);
      const float v = __ldg(values + e);
      const int y = (packed >> 8) & 255;
      const int dy = y * p.dil_h;
      const int dx = (packed & 255) * p.dil_w;
      const int off = (packed >> 16) * hw + dy * p.w + dx;
      if (kMaskBits > 0) {
        const int tap = y * p.kw + (packed & 255);
#pragma unroll
        for (int j = 0; j < kPix; ++j) {
          if ((mask[j] >> tap) & 1) acc[j] = fmaf(v, to_float(x[corner[j] + off]), acc[j]);
        }
      } else {
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

constexpr int kTiledRows = 16;          // output channels per CTA of the tiled kernel
constexpr int kTiledPixels = kThreads * kPix;  // at most 512 pixels per tile
constexpr int kTiledSmemFloats = 12 * 1024;    // 48 KB patch

struct TiledParams {
  CsrParams conv;
  int images_per_tile, rows_per_tile, chunk_channels, num_chunks;
  int patch_h, patch_w;
  int tiles_per_image;      // ceil(OH / rows_per_tile)
  int oc_blocks_per_group;  // ceil(OC/groups / kTiledRows)
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    sparse_conv2d_csr_tiled_kernel(const T* __restrict__ input, const int* __restrict__ chunk_ptr,
                                   const int2* __restrict__ entries,
                                   const float* __restrict__ bias, T* __restrict__ output,
                                   TiledParams t) {
  extern __shared__ float patch[];  // [chunk channel][image in tile][patch_h][patch_w]
  const CsrParams& p = t.conv;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int img0 = (blockIdx.x / t.tiles_per_image) * t.images_per_tile;
  const int oy0 = (blockIdx.x % t.tiles_per_image) * t.rows_per_tile;
  const int group = blockIdx.y / t.oc_blocks_per_group;
  const int oc0 = group * p.oc_per_group + (blockIdx.y % t.oc_blocks_per_group) * kTiledRows;
  const int oc_end = min((group + 1) * p.oc_per_group, oc0 + kTiledRows);
  const int ohw = p.oh * p.ow;
  const int image_pixels = t.rows_per_tile * p.ow;
  // Pixel slots j >= live_slots hold no pixel of this tile for any thread (CTA-uniform): skipped.
  const int live_slots = (t.images_per_tile * image_pixels + kThreads - 1) / kThreads;

  int base[kPix], out_at[kPix];
  bool live[kPix];
#pragma unroll
  for (int j = 0; j < kPix; ++j) {
    const int q = j * kThreads + tid;
    const int il = q / image_pixels;
    const int rest = q - il * image_pixels;
    const int ty = rest / p.ow;
    const int tx = rest - ty * p.ow;
    const int img = img0 + il;
    const int oy = oy0 + ty;
    live[j] = il < t.images_per_tile && img < p.n && oy < p.oh;
    base[j] = live[j] ? (il * t.patch_h + ty * p.stride_h) * t.patch_w + tx * p.stride_w : 0;
    out_at[j] = live[j] ? img * p.oc * ohw + oy * p.ow + tx : 0;
  }

  float acc[kTiledRows][kPix];
#pragma unroll
  for (int r = 0; r < kTiledRows; ++r)
#pragma unroll
    for (int j = 0; j < kPix; ++j) acc[r][j] = 0.f;

  const int in_y0 = oy0 * p.stride_h - p.pad_h;
  for (int chunk = 0; chunk < t.num_chunks; ++chunk) {
    const int c0 = chunk * t.chunk_channels;
    const int cc = min(t.chunk_channels, p.c_per_group - c0);
    __syncthreads();  // the previous chunk's readers are done
    // Stage rows (ci, image, py) of the patch, one warp per row, lanes along the width.
    const int patch_rows = cc * t.images_per_tile * t.patch_h;
    for (int r = warp; r < patch_rows; r += kThreads / 32) {
      const int py = r % t.patch_h;
      const int rest = r / t.patch_h;
      const int il = rest % t.images_per_tile;
      const int ci = rest / t.images_per_tile;
      const int img = img0 + il;
      const int ih = in_y0 + py;
      float* dst = patch + r * t.patch_w;
      if (img < p.n && ih >= 0 && ih < p.h) {
        const T* src = input + ((img * p.c + group * p.c_per_group + c0 + ci) * p.h + ih) * p.w;
        for (int px = lane; px < t.patch_w; px += 32) {
          const int iw = px - p.pad_w;
          dst[px] = (iw >= 0 && iw < p.w) ? to_float(src[iw]) : 0.f;
        }
      } else {
        for (int px = lane; px < t.patch_w; px += 32) dst[px] = 0.f;
      }
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kTiledRows; ++r) {
      const int oc = oc0 + r;
      if (oc >= oc_end) break;
      const int* cp = chunk_ptr + oc * (t.num_chunks + 1) + chunk;
      const int end = __ldg(cp + 1);
#pragma unroll 4
      for (int e = __ldg(cp); e < end; ++e) {
        const int2 entry = __ldg(entries + e);  // one 8-byte warp-uniform load per non-zero
        const int off = entry.x;
        const float v = __int_as_float(entry.y);
#pragma unroll
        for (int j = 0; j < kPix; ++j) {
          if (j < live_slots) acc[r][j] = fmaf(v, patch[base[j] + off], acc[r][j]);
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kTiledRows; ++r) {
    const int oc = oc0 + r;
    if (oc >= oc_end) break;
    const float b = bias != nullptr ? __ldg(bias + oc) : 0.f;
#pragma unroll
    for (int j = 0; j < kPix; ++j) {
      if (!live[j]) continue;
      float v = acc[r][j] + b;
      if (p.relu) v = v < 0.f ? 0.f : v;  // NaN stays NaN
      output[out_at[j] + oc * ohw] = from_float<T>(v);
    }
  }
}

// Block-sparse weights (SparseWeight "block": 32 output channels of a group share their kept
// positions): the tiled kernel's patch staging and pixel tiling, but a CTA owns one 32-channel
// panel, each kept position's input is read once per pixel and feeds 32 FMAs (its 32 values are
// warp-uniform float4 loads). taps are ordered by input channel within each panel, chunk_ptr is
// per panel; values [kept][32].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    sparse_conv2d_block_tiled_kernel(const T* __restrict__ input,
                                     const int* __restrict__ chunk_ptr,
                                     const int* __restrict__ offsets,
                                     const float4* __restrict__ values,
                                     const float* __restrict__ bias, T* __restrict__ output,
                                     TiledParams t) {
  extern __shared__ float patch[];  // [chunk channel][image in tile][patch_h][patch_w]
  const CsrParams& p = t.conv;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int img0 = (blockIdx.x / t.tiles_per_image) * t.images_per_tile;
  const int oy0 = (blockIdx.x % t.tiles_per_image) * t.rows_per_tile;
  const int panel = blockIdx.y;  // group * oc_blocks_per_group + panel within the group
  const int group = panel / t.oc_blocks_per_group;
  const int oc0 = group * p.oc_per_group + (panel % t.oc_blocks_per_group) * 32;
  const int rows = min(32, (group + 1) * p.oc_per_group - oc0);
  const int ohw = p.oh * p.ow;
  const int image_pixels = t.rows_per_tile * p.ow;
  const int live_slots = (t.images_per_tile * image_pixels + kThreads - 1) / kThreads;

  int base[kPix], out_at[kPix];
  bool live[kPix];
#pragma unroll
  for (int j = 0; j < kPix; ++j) {
    const int q = j * kThreads + tid;
    const int il = q / image_pixels;
    const int rest = q - il * image_pixels;
    const int ty = rest / p.ow;
    const int tx = rest - ty * p.ow;
    const int img = img0 + il;
    const int oy = oy0 + ty;
    live[j] = il < t.images_per_tile && img < p.n && oy < p.oh;
    base[j] = live[j] ? (il * t.patch_h + ty * p.stride_h) * t.patch_w + tx * p.stride_w : 0;
    out_at[j] = live[j] ? img * p.oc * ohw + oy * p.ow + tx : 0;
  }

  float acc[32][kPix];
#pragma unroll
  for (int r = 0; r < 32; ++r)
#pragma unroll
    for (int j = 0; j < kPix; ++j) acc[r][j] = 0.f;

  const int in_y0 = oy0 * p.stride_h - p.pad_h;
  for (int chunk = 0; chunk < t.num_chunks; ++chunk) {
    const int c0 = chunk * t.chunk_channels;
    const int cc = min(t.chunk_channels, p.c_per_group - c0);
    __syncthreads();
    const int patch_rows = cc * t.images_per_tile * t.patch_h;
    for (int r = warp; r < patch_rows; r += kThreads / 32) {
      const int py = r % t.patch_h;
      const int rest = r / t.patch_h;
      const int il = rest % t.images_per_tile;
      const int ci = rest / t.images_per_tile;
      const int img = img0 + il;
      const int ih = in_y0 + py;
      float* dst = patch + r * t.patch_w;
      if (img < p.n && ih >= 0 && ih < p.h) {
        const T* src = input + ((img * p.c + group * p.c_per_group + c0 + ci) * p.h + ih) * p.w;
        for (int px = lane; px < t.patch_w; px += 32) {
          const int iw = px - p.pad_w;
          dst[px] = (iw >= 0 && iw < p.w) ? to_float(src[iw]) : 0.f;
        }
      } else {
        for (int px = lane; px < t.patch_w; px += 32) dst[px] = 0.f;
      }
    }
    __syncthreads();
    const int* cp = chunk_ptr + panel * (t.num_chunks + 1) + chunk;
    const int end = __ldg(cp + 1);
    for (int e = __ldg(cp); e < end; ++e) {
      const int off = __ldg(offsets + e);
      float x[kPix];
#pragma unroll
      for (int j = 0; j < kPix; ++j) x[j] = j < live_slots ? patch[base[j] + off] : 0.f;
      const float4* v = values + int64_t(e) * 8;
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        const float4 w = __ldg(v + q);
#pragma unroll
        for (int j = 0; j < kPix; ++j) {
          acc[4 * q + 0][j] = fmaf(w.x, x[j], acc[4 * q + 0][j]);
          acc[4 * q + 1][j] = fmaf(w.y, x[j], acc[4 * q + 1][j]);
          acc[4 * q + 2][j] = fmaf(w.z, x[j], acc[4 * q + 2][j]);
          acc[4 * q + 3][j] = fmaf(w.w, x[j], acc[4 * q + 3][j]);
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 32; ++r) {
    if (r >= rows) break;
    const int oc = oc0 + r;
    const float b = bias != nullptr ? __ldg(bias + oc) : 0.f;
#pragma unroll
    for (int j = 0; j < kPix; ++j) {
      if (!live[j]) continue;
      float v = acc[r][j] + b;
      if (p.relu) v = v < 0.f ? 0.f : v;  // NaN stays NaN
      output[out_at[j] + oc * ohw] = from_float<T>(v);
    }
  }
}

}  // namespace sparse_csr
}  // namespace cuda
}  // namespace pyfastcnn
