// Launchers of the sparse conv kernels: re-check what the Python layer checked (the backstop
// against out-of-bounds access), pick the instantiation, launch on the caller's stream.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <string>

#include "check.cuh"
#include "sparse24_kernel.cuh"
#include "sparse_csr_kernel.cuh"
#include "sparse_ops.h"

namespace pyfastcnn {
namespace cuda {

namespace {

bool aligned(uintptr_t p, uintptr_t bytes) { return p % bytes == 0; }

void require_conv_sizes(int64_t n, int64_t c, int64_t h, int64_t w, int64_t oc, int64_t kh,
                        int64_t kw, int64_t oh, int64_t ow, int64_t stride_h, int64_t stride_w,
                        int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w,
                        int64_t groups) {
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
                      uintptr_t taps, uintptr_t values, uintptr_t bias, uintptr_t output,
                      cudaStream_t stream) {
  const sparse_csr::CsrParams& p = t.conv;
  const int image_tiles = (p.n + t.images_per_tile - 1) / t.images_per_tile;
  const int64_t blocks_x = int64_t(image_tiles) * t.tiles_per_image;
  const int64_t blocks_y = int64_t(p.oc / p.oc_per_group) * t.oc_blocks_per_group;
  PYFASTCNN_CUDA_REQUIRE(blocks_x < INT_MAX && blocks_y <= 65535, "grid too large");
  const size_t smem = size_t(t.chunk_channels) * t.images_per_tile * t.patch_h * t.patch_w *
                      sizeof(float);
  sparse_csr::sparse_conv2d_csr_tiled_kernel<T>
      <<<dim3(unsigned(blocks_x), unsigned(blocks_y)), sparse_csr::kThreads, smem, stream>>>(
          as_ptr<const T>(input), as_ptr<const int>(chunk_ptr), as_ptr<const int>(taps),
          as_ptr<const float>(values), as_ptr<const float>(bias), as_ptr<T>(output), t);
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
             uintptr_t taps, uintptr_t values, uintptr_t bias, uintptr_t output,
             cudaStream_t stream) {
  if (chunk_ptr == 0) {
    launch_csr<T>(p, input, row_ptr, taps, values, bias, output, stream);
    return;
  }
  const sparse_csr::TiledParams t = tiled_params(p, images_per_tile, rows_per_tile,
                                                 chunk_channels, sparse_csr::kTiledRows);
  launch_csr_tiled<T>(t, input, chunk_ptr, taps, values, bias, output, stream);
}

template <typename T>
void run_block(const sparse_csr::CsrParams& p, uintptr_t chunk_ptr, int64_t images_per_tile,
               int64_t rows_per_tile, int64_t chunk_channels, uintptr_t input, uintptr_t taps,
               uintptr_t values, uintptr_t bias, uintptr_t output, cudaStream_t stream) {
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
          as_ptr<const T>(input), as_ptr<const int>(chunk_ptr), as_ptr<const int>(taps),
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

void sparse_conv2d_csr(int device, uintptr_t input, int dtype, uintptr_t row_ptr, uintptr_t taps,
                       uintptr_t values, uintptr_t bias, uintptr_t output, int64_t n, int64_t c,
                       int64_t h, int64_t w, int64_t oc, int64_t kh, int64_t kw, int64_t oh,
                       int64_t ow, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                       int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups, int64_t nnz,
                       bool relu, uintptr_t chunk_ptr, int64_t images_per_tile,
                       int64_t rows_per_tile, int64_t chunk_channels, uintptr_t stream) {
  require_conv_sizes(n, c, h, w, oc, kh, kw, oh, ow, stride_h, stride_w, pad_h, pad_w, dil_h,
                     dil_w, groups);
  PYFASTCNN_CUDA_REQUIRE(input && row_ptr && output && (nnz == 0 || (taps && values)),
                         "null device pointer");
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
               values, bias, output, s);
  };
  switch (dtype) {
    case 0: go(float()); break;
    case 1: go(__half()); break;
    default: go(__nv_bfloat16());
  }
}

void sparse_conv2d_block(int device, uintptr_t input, int dtype, uintptr_t chunk_ptr,
                         uintptr_t taps, uintptr_t values, uintptr_t bias, uintptr_t output,
                         int64_t n, int64_t c, int64_t h, int64_t w, int64_t oc, int64_t kh,
                         int64_t kw, int64_t oh, int64_t ow, int64_t stride_h, int64_t stride_w,
                         int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w,
                         int64_t groups, int64_t kept, bool relu, int64_t images_per_tile,
                         int64_t rows_per_tile, int64_t chunk_channels, uintptr_t stream) {
  require_conv_sizes(n, c, h, w, oc, kh, kw, oh, ow, stride_h, stride_w, pad_h, pad_w, dil_h,
                     dil_w, groups);
  PYFASTCNN_CUDA_REQUIRE(input && chunk_ptr && output && (kept == 0 || (taps && values)),
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
    run_block<T>(p, chunk_ptr, images_per_tile, rows_per_tile, chunk_channels, input, taps, values,
                 bias, output, s);
  };
  switch (dtype) {
    case 0: go(float()); break;
    case 1: go(__half()); break;
    default: go(__nv_bfloat16());
  }
}

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
