// Launchers of the direct sparse conv kernels (CSR, block): re-check what the Python layer checked (the backstop against
// out-of-bounds access), pick the instantiation, launch on the caller's stream.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>

#include "check.cuh"
#include "sparse_csr_kernel.cuh"
#include "sparse_common.cuh"
#include "sparse_ops.h"

namespace pyfastcnn {
namespace cuda {

namespace {

using sparse_common::aligned;
using sparse_common::require_conv_sizes;

template <typename T>
void launch_csr(const sparse_csr::CsrParams& p, uintptr_t input, uintptr_t row_ptr,
                uintptr_t taps, uintptr_t values, uintptr_t bias, uintptr_t output,
                cudaStream_t stream) {
  const dim3 grid((p.num_pixels + sparse_csr::kThreads * sparse_csr::kPix - 1) /
                      (sparse_csr::kThreads * sparse_csr::kPix),
                  (p.oc + sparse_csr::kRows - 1) / sparse_csr::kRows);
  PYFASTCNN_CUDA_REQUIRE(grid.y <= 65535, "too many output channels for one launch");
  const int num_taps = p.kh * p.kw;
  auto args = [&](auto kernel) {
    kernel<<<grid, sparse_csr::kThreads, 0, stream>>>(
        as_ptr<const T>(input), as_ptr<const int>(row_ptr), as_ptr<const int>(taps),
        as_ptr<const float>(values), as_ptr<const float>(bias), as_ptr<T>(output), p);
  };
  if (num_taps <= 32) {
    args(sparse_csr::sparse_conv2d_csr_kernel<T, 32>);
  } else if (num_taps <= 64) {
    args(sparse_csr::sparse_conv2d_csr_kernel<T, 64>);
  } else {
    args(sparse_csr::sparse_conv2d_csr_kernel<T, 0>);
  }
  PYFASTCNN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_csr_tiled(const sparse_csr::TiledParams& t, uintptr_t input, uintptr_t chunk_ptr,
                      uintptr_t entries, uintptr_t bias, uintptr_t output, cudaStream_t stream) {
  const sparse_csr::CsrParams& p = t.conv;
  const int image_tiles = (p.n + t.images_per_tile - 1) / t.images_per_tile;
  const int64_t blocks_x = int64_t(image_tiles) * t.tiles_per_image;
  const int64_t blocks_y = int64_t(p.oc / p.oc_per_group) * t.oc_blocks_per_group;
  PYFASTCNN_CUDA_REQUIRE(blocks_x < INT_MAX && blocks_y <= 65535, "grid too large");
  const size_t smem = size_t(t.chunk_channels) * t.images_per_tile * t.patch_h * t.patch_w *
                      sizeof(float);
  sparse_csr::sparse_conv2d_csr_tiled_kernel<T>
      <<<dim3(unsigned(blocks_x), unsigned(blocks_y)), sparse_csr::kThreads, smem, stream>>>(
          as_ptr<const T>(input), as_ptr<const int>(chunk_ptr), as_ptr<const int2>(entries),
          as_ptr<const float>(bias), as_ptr<T>(output), t);
  PYFASTCNN_CUDA_CHECK_LAUNCH();
}

// The checked tile plan of the tiled kernels; oc_block: output channels per CTA.
sparse_csr::TiledParams tiled_params(const sparse_csr::CsrParams& p, int64_t images_per_tile,
                                     int64_t rows_per_tile, int64_t chunk_channels,
                                     int oc_block) {
  sparse_csr::TiledParams t;
  t.conv = p;
  PYFASTCNN_CUDA_REQUIRE(images_per_tile >= 1 && rows_per_tile >= 1 && chunk_channels >= 1 &&
                             rows_per_tile <= p.oh &&
                             images_per_tile * rows_per_tile * p.ow <= sparse_csr::kTiledPixels,
                         "bad tile plan: at most 512 pixels of whole output rows");
  t.images_per_tile = int(images_per_tile);
  t.rows_per_tile = int(rows_per_tile);
  t.chunk_channels = int(std::min<int64_t>(chunk_channels, p.c_per_group));
  t.num_chunks = (p.c_per_group + t.chunk_channels - 1) / t.chunk_channels;
  PYFASTCNN_CUDA_REQUIRE(int64_t(chunk_channels) == t.chunk_channels,
                         "chunk_channels must not exceed C/groups");
  t.patch_h = (t.rows_per_tile - 1) * p.stride_h + (p.kh - 1) * p.dil_h + 1;
  t.patch_w = (p.ow - 1) * p.stride_w + (p.kw - 1) * p.dil_w + 1;
  PYFASTCNN_CUDA_REQUIRE(int64_t(t.chunk_channels) * t.images_per_tile * t.patch_h * t.patch_w <=
                             sparse_csr::kTiledSmemFloats,
                         "bad tile plan: the input patch must fit 48 KB");
  t.tiles_per_image = (p.oh + t.rows_per_tile - 1) / t.rows_per_tile;
  t.oc_blocks_per_group = (p.oc_per_group + oc_block - 1) / oc_block;
  return t;
}

template <typename T>
void run_csr(const sparse_csr::CsrParams& p, uintptr_t chunk_ptr, int64_t images_per_tile,
             int64_t rows_per_tile, int64_t chunk_channels, uintptr_t input, uintptr_t row_ptr,
             uintptr_t taps, uintptr_t values, uintptr_t entries, uintptr_t bias,
             uintptr_t output, cudaStream_t stream) {
  if (chunk_ptr == 0) {
    launch_csr<T>(p, input, row_ptr, taps, values, bias, output, stream);
    return;
  }
  const sparse_csr::TiledParams t = tiled_params(p, images_per_tile, rows_per_tile,
                                                 chunk_channels, sparse_csr::kTiledRows);
  launch_csr_tiled<T>(t, input, chunk_ptr, entries, bias, output, stream);
}

template <typename T>
void run_block(const sparse_csr::CsrParams& p, uintptr_t chunk_ptr, int64_t images_per_tile,
               int64_t rows_per_tile, int64_t chunk_channels, uintptr_t input,
               uintptr_t offsets, uintptr_t values, uintptr_t bias, uintptr_t output,
               cudaStream_t stream) {
  const sparse_csr::TiledParams t =
      tiled_params(p, images_per_tile, rows_per_tile, chunk_channels, 32);
  const int image_tiles = (p.n + t.images_per_tile - 1) / t.images_per_tile;
  const int64_t blocks_x = int64_t(image_tiles) * t.tiles_per_image;
  const int64_t blocks_y = int64_t(p.oc / p.oc_per_group) * t.oc_blocks_per_group;
  PYFASTCNN_CUDA_REQUIRE(blocks_x < INT_MAX && blocks_y <= 65535, "grid too large");
  const size_t smem = size_t(t.chunk_channels) * t.images_per_tile * t.patch_h * t.patch_w *
                      sizeof(float);
  sparse_csr::sparse_conv2d_block_tiled_kernel<T>
      <<<dim3(unsigned(blocks_x), unsigned(blocks_y)), sparse_csr::kThreads, smem, stream>>>(
          as_ptr<const T>(input), as_ptr<const int>(chunk_ptr), as_ptr<const int>(offsets),
          as_ptr<const float4>(values), as_ptr<const float>(bias), as_ptr<T>(output), t);
  PYFASTCNN_CUDA_CHECK_LAUNCH();
}

sparse_csr::CsrParams csr_params(int64_t n, int64_t c, int64_t h, int64_t w, int64_t oc,
                                 int64_t kh, int64_t kw, int64_t oh, int64_t ow,
                                 int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                 int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups,
                                 bool relu) {
  sparse_csr::CsrParams p;
  p.n = int(n); p.c = int(c); p.h = int(h); p.w = int(w); p.oc = int(oc);
  p.kh = int(kh); p.kw = int(kw); p.oh = int(oh); p.ow = int(ow);
  p.stride_h = int(stride_h); p.stride_w = int(stride_w);
  p.pad_h = int(pad_h); p.pad_w = int(pad_w); p.dil_h = int(dil_h); p.dil_w = int(dil_w);
  p.c_per_group = int(c / groups); p.oc_per_group = int(oc / groups);
  p.num_pixels = int(n * oh * ow);
  p.relu = relu;
  return p;
}

}  // namespace

void sparse_conv2d_csr(int device, uintptr_t input, int dtype, uintptr_t row_ptr, uintptr_t taps,
                       uintptr_t values, uintptr_t bias, uintptr_t output, int64_t n, int64_t c,
                       int64_t h, int64_t w, int64_t oc, int64_t kh, int64_t kw, int64_t oh,
                       int64_t ow, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                       int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups, int64_t nnz,
                       bool relu, uintptr_t chunk_ptr, uintptr_t entries,
                       int64_t images_per_tile, int64_t rows_per_tile, int64_t chunk_channels,
                       uintptr_t stream) {
  require_conv_sizes(n, c, h, w, oc, kh, kw, oh, ow, stride_h, stride_w, pad_h, pad_w, dil_h,
                     dil_w, groups);
  PYFASTCNN_CUDA_REQUIRE(input && row_ptr && output && (nnz == 0 || (taps && values)) &&
                             (chunk_ptr == 0 || nnz == 0 || entries),
                         "null device pointer");
  PYFASTCNN_CUDA_REQUIRE(aligned(entries, 8), "entries must be 8-byte aligned");
  PYFASTCNN_CUDA_REQUIRE(nnz >= 0 && nnz < INT_MAX, "nnz must fit in int32");
  PYFASTCNN_CUDA_REQUIRE(kh < 256 && kw < 256 && c / groups < 32768,
                         "kernel must be under 256x256 and C/groups under 32768");
  PYFASTCNN_CUDA_REQUIRE(dtype >= 0 && dtype <= 2, "dtype must be 0 (f32), 1 (f16) or 2 (bf16)");
  DeviceScope scope(device);
  const sparse_csr::CsrParams p = csr_params(n, c, h, w, oc, kh, kw, oh, ow, stride_h, stride_w,
                                             pad_h, pad_w, dil_h, dil_w, groups, relu);
  const cudaStream_t s = as_stream(stream);
  auto go = [&](auto tag) {
    using T = decltype(tag);
    run_csr<T>(p, chunk_ptr, images_per_tile, rows_per_tile, chunk_channels, input, row_ptr, taps,
               values, entries, bias, output, s);
  };
  switch (dtype) {
    case 0: go(float()); break;
    case 1: go(__half()); break;
    default: go(__nv_bfloat16());
  }
}

void sparse_conv2d_block(int device, uintptr_t input, int dtype, uintptr_t chunk_ptr,
                         uintptr_t offsets, uintptr_t values, uintptr_t bias, uintptr_t output,
                         int64_t n, int64_t c, int64_t h, int64_t w, int64_t oc, int64_t kh,
                         int64_t kw, int64_t oh, int64_t ow, int64_t stride_h, int64_t stride_w,
                         int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w,
                         int64_t groups, int64_t kept, bool relu, int64_t images_per_tile,
                         int64_t rows_per_tile, int64_t chunk_channels, uintptr_t stream) {
  require_conv_sizes(n, c, h, w, oc, kh, kw, oh, ow, stride_h, stride_w, pad_h, pad_w, dil_h,
                     dil_w, groups);
  PYFASTCNN_CUDA_REQUIRE(input && chunk_ptr && output && (kept == 0 || (offsets && values)),
                         "null device pointer");
  PYFASTCNN_CUDA_REQUIRE(aligned(values, 16), "values must be 16-byte aligned");
  PYFASTCNN_CUDA_REQUIRE(kept >= 0 && kept < INT_MAX / 32, "too many kept positions");
  PYFASTCNN_CUDA_REQUIRE(kh < 256 && kw < 256 && c / groups < 32768,
                         "kernel must be under 256x256 and C/groups under 32768");
  PYFASTCNN_CUDA_REQUIRE(dtype >= 0 && dtype <= 2, "dtype must be 0 (f32), 1 (f16) or 2 (bf16)");
  DeviceScope scope(device);
  const sparse_csr::CsrParams p = csr_params(n, c, h, w, oc, kh, kw, oh, ow, stride_h, stride_w,
                                             pad_h, pad_w, dil_h, dil_w, groups, relu);
  const cudaStream_t s = as_stream(stream);
  auto go = [&](auto tag) {
    using T = decltype(tag);
    run_block<T>(p, chunk_ptr, images_per_tile, rows_per_tile, chunk_channels, input, offsets,
                 values, bias, output, s);
  };
  switch (dtype) {
    case 0: go(float()); break;
    case 1: go(__half()); break;
    default: go(__nv_bfloat16());
  }
}

}  // namespace cuda
}  // namespace pyfastcnn
