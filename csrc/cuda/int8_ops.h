// Host entry points of the CUDA INT8 kernels (no CUDA headers: the bindings include this with
// the host compiler). All pointers are device pointers passed as integers; `stream` is the
// caller's cudaStream_t as an integer; `device` is the CUDA device index the pointers live on.
//
// Math (the CPU ops' math, pyfastcnn/ops/quantized.py):
//   acc[m, n] = sum_k a[m, k] * b[n, k] - x_zero_point * col_sums[n]       (int32, wraps)
//   i32 out: acc
//   y = clamp(acc * (x_scale * w_scale[n]) + bias[n] + residual term, clamp_min, clamp_max)
//   f32 out: y;  s8/u8 out: saturate(round_half_even(y / out_scale + out_zero_point))
//   (8-bit outputs evaluate y already divided by out_scale, as the CPU kernels do.)
#pragma once
#include <cstdint>

namespace pyfastcnn {
namespace cuda {

struct EpilogueArgs {
  int out_kind = 0;            // 0 int32, 1 float32, 2 int8, 3 uint8
  uintptr_t col_sums = 0;      // int32 [channels], or 0 (no zero-point correction)
  int32_t x_zero_point = 0;
  float x_scale = 1.0f;
  uintptr_t w_scale = 0;       // float32 [channels] (needed unless out_kind == 0)
  uintptr_t bias = 0;          // float32 [channels] or 0
  float out_scale = 1.0f;
  int32_t out_zero_point = 0;
  float clamp_min = 0.0f, clamp_max = 0.0f;  // in y's units (the caller passes +-inf for none)
  uintptr_t residual = 0;      // int8/uint8 codes laid out like the output, or 0
  bool residual_signed = false;
  float residual_scale = 1.0f;
  int32_t residual_zero_point = 0;
};

// Which kernel runs a GEMM or implicit-GEMM conv. Auto: mma.sync (tensor cores) where the
// operands allow it, else CUDA cores (GEMM). Wgmma (Hopper, sm_90a builds) is taken only when
// asked for until it has been verified on a GPU (see int8_igemm_launch.cu, kAutoWgmma).
enum class Int8Path : int { automatic = 0, mma_sync = 1, cuda_cores = 2, wgmma = 3 };

// out[M, N] (row stride ldc elements) = epilogue(a[M, K] x b^T) with a int8 (a_signed) or
// uint8, row stride lda bytes, unit column stride; b int8 [N, K] (row stride ldb bytes, unit
// column stride: the transposed weight). The tensor-core kernels need K % 16 == 0 and a, lda,
// b, ldb 16-byte aligned: otherwise (or path 2) the CUDA-core kernel runs. path: Int8Path.
void int8_gemm(int device, uintptr_t stream, uintptr_t a, int64_t lda, bool a_signed, uintptr_t b,
               int64_t ldb, int64_t M, int64_t N, int64_t K, uintptr_t out, int64_t ldc,
               const EpilogueArgs& epi, int path);

// True when `device` can run the wgmma kernel (sm_90 and this build has sm_90a code).
bool int8_wgmma_available(int device);

// The same product with b given as int8 [K, N] with arbitrary element strides (CUDA cores):
// int8_gemm(a, b) on two plain CUDA tensors whose shape the tensor-core kernel does not take.
void int8_gemm_strided(int device, uintptr_t stream, uintptr_t a, int64_t lda, bool a_signed,
                       uintptr_t b, int64_t b_stride_k, int64_t b_stride_n, int64_t M, int64_t N,
                       int64_t K, uintptr_t out, int64_t ldc, const EpilogueArgs& epi);

// INT8 conv2d as an implicit GEMM on tensor cores. x: NHWC bytes [batch, Hp, Wp, Cp], already
// padded spatially (with the zero point) so every tap of every output pixel lies inside it,
// group g's channels at [g * cgp, g * cgp + cgp), cgp a multiple of 16, Cp = groups * cgp.
// weight: int8 [groups * ocg, KH * KW * cgp], row (g * ocg + o), column (kh * KW + kw) * cgp + c.
// out: [batch * OH * OW, groups * ocg] (NHWC), typed by epi.out_kind. path: Int8Path (not 2).
void int8_conv2d_igemm(int device, uintptr_t stream, uintptr_t x, bool x_signed, int64_t batch,
                       int64_t Hp, int64_t Wp, int64_t Cp, uintptr_t weight, int64_t KH,
                       int64_t KW, int64_t cgp, int64_t groups, int64_t ocg, int64_t stride_h,
                       int64_t stride_w, int64_t dil_h, int64_t dil_w, int64_t OH, int64_t OW,
                       uintptr_t out, const EpilogueArgs& epi, int path);

// INT8 conv2d on CUDA cores, one thread per output element (depthwise and other convs with few
// channels per group). x: NHWC [batch, Hp, Wp, groups * cg] padded as above (cg unpadded);
// weight: int8 [groups * ocg, KH * KW * cg], column (kh * KW + kw) * cg + c.
void int8_conv2d_direct(int device, uintptr_t stream, uintptr_t x, bool x_signed, int64_t batch,
                        int64_t Hp, int64_t Wp, uintptr_t weight, int64_t KH, int64_t KW,
                        int64_t cg, int64_t groups, int64_t ocg, int64_t stride_h,
                        int64_t stride_w, int64_t dil_h, int64_t dil_w, int64_t OH, int64_t OW,
                        uintptr_t out, const EpilogueArgs& epi);

}  // namespace cuda
}  // namespace pyfastcnn
