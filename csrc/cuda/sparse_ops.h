// Host-side entry points of the sparse conv kernels (no CUDA headers: the bindings include this
// with the host compiler). Pointers are device pointers passed as integers; `stream` is the
// caller's cudaStream_t; `device` is the index of the device the tensors live on (each entry point
// makes it current for the call, see DeviceScope in check.cuh).
#pragma once
#include <cstdint>

namespace pyfastcnn {
namespace cuda {

// Element types of the activations (codes shared with the Python layer).
enum class SparseDType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

// Direct sparse convolution, NCHW input [N, C, H, W] and output [N, OC, OH, OW], both contiguous,
// with a CSR weight over output channels:
//   row_ptr [OC + 1] (int32), values [nnz] (float32),
//   taps [nnz] (int32): ci_in_group << 16 | kh << 8 | kw  (ci < 2^15, kh, kw < 256),
//   chunk_ptr [OC][ceil(C/groups / chunk_channels) + 1] (int32): where each row's non-zeros of
//     input channels [j * chunk_channels, (j + 1) * chunk_channels) start (rows are sorted by
//     ci), or 0 to run the untiled fallback kernel (which reads taps and values);
//   entries [nnz] (2 x int32, tiled kernel): the non-zero's offset in the staged input patch,
//     (ci % chunk_channels) * images_per_tile * patch_h * patch_w + kh * dil_h * patch_w +
//     kw * dil_w with patch_h = (rows_per_tile - 1) * stride_h + (KH - 1) * dil_h + 1 and
//     patch_w = (OW - 1) * stride_w + (KW - 1) * dil_w + 1, and the bits of its float32 value.
// Tile plan of the tiled kernel (see pyfastcnn.ops.cuda_sparse._csr_plan): images_per_tile x
// rows_per_tile whole output rows (at most 512 pixels), chunk_channels input channels staged at
// a time (the patch must fit 48 KB).
// Any stride / padding (top, left) / dilation / groups; bias [OC] float32 or 0; relu clamps
// negatives to 0 (NaN stays NaN). FP32 accumulation for every input dtype.
void sparse_conv2d_csr(int device, uintptr_t input, int dtype, uintptr_t row_ptr, uintptr_t taps,
                       uintptr_t values, uintptr_t bias, uintptr_t output, int64_t n, int64_t c,
                       int64_t h, int64_t w, int64_t oc, int64_t kh, int64_t kw, int64_t oh,
                       int64_t ow, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                       int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups, int64_t nnz,
                       bool relu, uintptr_t chunk_ptr, uintptr_t entries,
                       int64_t images_per_tile, int64_t rows_per_tile, int64_t chunk_channels,
                       uintptr_t stream);

// Block-sparse direct convolution (tiled kernel only; same layouts and tile plan as above, a CTA
// owns 32 output channels): kept positions of each 32-channel panel of each group, ordered by
// input channel within the panel:
//   offsets [kept] (int32, the position's offset in the staged patch, as entries above),
//   values [kept][32] (float32, 16-byte aligned; rows past the group's channel count are
//   ignored),
//   chunk_ptr [groups * panels][ceil(C/groups / chunk_channels) + 1] (int32).
void sparse_conv2d_block(int device, uintptr_t input, int dtype, uintptr_t chunk_ptr,
                         uintptr_t offsets, uintptr_t values, uintptr_t bias, uintptr_t output,
                         int64_t n, int64_t c, int64_t h, int64_t w, int64_t oc, int64_t kh,
                         int64_t kw, int64_t oh, int64_t ow, int64_t stride_h, int64_t stride_w,
                         int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w,
                         int64_t groups, int64_t kept, bool relu, int64_t images_per_tile,
                         int64_t rows_per_tile, int64_t chunk_channels, uintptr_t stream);

// 2:4 structured-sparse implicit-GEMM convolution on sparse tensor cores (mma.sp m16n8k32),
// NHWC input [N, H, W, C] and NHWC output [N, OH, OW, OC], FP16 or BF16 (dtype 1 or 2), FP32
// accumulation. The weight is GEMM operand A (M = OC per group, K = KH*KW*C/groups ordered
// (kh, kw, c), zero-padded to k_padded, a multiple of 64) in the fragment-native layout that
// pyfastcnn.ops.sparse_conv.sparse24_fragments builds:
//   frags [groups][m_tiles][k_padded/32][32 lanes][8] (input dtype), m_tiles = m_padded / 16,
//   meta  [groups][m_tiles][k_padded/32][32 lanes] (uint32), m_padded = OC/groups rounded up to
//   a multiple of 64.
// C/groups must be a multiple of 4; bias [OC] float32 or 0.
void sparse24_conv2d(int device, uintptr_t input, int dtype, uintptr_t frags, uintptr_t meta,
                     uintptr_t bias, uintptr_t output, int64_t n, int64_t c, int64_t h, int64_t w,
                     int64_t oc, int64_t kh, int64_t kw, int64_t oh, int64_t ow, int64_t stride_h,
                     int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                     int64_t dil_w, int64_t groups, int64_t m_padded, int64_t k_padded, bool relu,
                     uintptr_t stream);

}  // namespace cuda
}  // namespace pyfastcnn
