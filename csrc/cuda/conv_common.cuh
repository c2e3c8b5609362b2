// Shared by the conv kernels: the launch parameters, element conversions, the epilogue, and the
// inline PTX wrappers (cp.async, ldmatrix, mma.sync) the tensor-core kernel is built from.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace pyfastcnn {
namespace cuda {
namespace conv {

// One conv call. Activations and output NHWC, weight [OC][KH][KW][Cg] (K-contiguous), so the
// conv is the GEMM y[M][OC] = A[M][K] * W[OC][K]^T with M = N*OH*OW, K = KH*KW*Cg per group and
// A gathered on the fly (implicit im2col). Every count fits an int (the launcher checks); only
// whole-tensor offsets need 64 bits.
struct Params {
  const void* x;
  const void* w;
  const float* bias;  // may be null
  void* y;
  int n, h, w_in, c;
  int oc, kh, kw;
  int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int groups, oh, ow;
  int cg, ocg, k;  // channels per group (input, output), GEMM depth per group
  int m;           // n * oh * ow
  float clamp_min, clamp_max;
};

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

// Two adjacent elements (4-byte aligned) rounded once each.
__device__ __forceinline__ void store_pair(__half* dst, float a, float b) {
  *reinterpret_cast<__half2*>(dst) = __floats2half2_rn(a, b);
}
__device__ __forceinline__ void store_pair(__nv_bfloat16* dst, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(a, b);
}

// Comparisons, not fminf/fmaxf: a NaN stays NaN through ReLU, as on the CPU path.
__device__ __forceinline__ float clamp_value(float v, float lo, float hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// --- PTX wrappers (PTX ISA: cp.async, ldmatrix, mma.m16n8k16) ---------------------------------

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global->shared copy; with valid == false nothing is read (src-size 0) and the 16
// destination bytes are zero-filled: that is how padding taps and tile tails become zeros.
// `src` must still be a valid address: callers pass the tensor's base pointer then.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  const int src_size = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)),
               "l"(src), "r"(src_size)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 b16 matrices: lane 8*i + r gives the address of row r of matrix i; register i of
// lane l receives row l/4, columns 2*(l%4) and 2*(l%4)+1 of matrix i.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}

// D(16x8, f32) += A(16x16, row) * B(16x8, col). With g = lane/4, t = lane%4:
//   a[0]: A[g][2t..2t+1]   a[1]: A[g+8][2t..]   a[2]: A[g][2t+8..]   a[3]: A[g+8][2t+8..]
//   b[0]: B[2t..2t+1][g]   b[1]: B[2t+8..2t+9][g]
//   d[0], d[1]: D[g][2t], D[g][2t+1]   d[2], d[3]: D[g+8][2t], D[g+8][2t+1]
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4],
                                          const uint32_t (&b)[2]);
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4],
                                                  const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                         const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// --- launchers of each kernel family (conv_*_launch.cu); conv_launch.cu picks one -------------
// Each returns the name of the variant it ran.
const char* launch_tc_f16(const Params& p, cudaStream_t stream);
const char* launch_tc_bf16(const Params& p, cudaStream_t stream);
const char* launch_simt(const Params& p, int dtype, cudaStream_t stream);
const char* launch_direct(const Params& p, int dtype, cudaStream_t stream);

}  // namespace conv
}  // namespace cuda
}  // namespace pyfastcnn
