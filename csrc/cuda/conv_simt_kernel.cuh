// Implicit-GEMM conv on CUDA cores with FP32 FMAs (no TF32), fused bias + clamp. The float32
// path; also float16/bfloat16 where the tensor-core kernel does not apply (C/groups % 8 != 0,
// e.g. the C = 3 stem): operands are widened to FP32 when staged in shared memory.
//
// CTA tile 128 (pixels) x 64 (output channels) x 8 (K), 128 threads, each computing 8 x 8
// outputs from shared memory with float4 reads (rows tm*4 + {0..3} and 64 + tm*4 + {0..3},
// columns tn*4 + {0..3} and 32 + tn*4 + {0..3}: two float4 per operand, no bank conflicts).
// Global loads: 8 consecutive threads read 8 consecutive K elements of one pixel (32 bytes
// along the NHWC channels), each thread keeps its own K position; the next tile is fetched into
// registers while the current one is multiplied (double-buffered shared memory, one barrier per
// tile). Works for any geometry; the launcher sends tiny-channel groups to the direct kernel.
#pragma once
#include "conv_common.cuh"

namespace pyfastcnn {
namespace cuda {
namespace conv {

constexpr int kSimtBM = 128, kSimtBN = 64, kSimtBK = 8, kSimtThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kSimtThreads) conv_simt_kernel(const Params p) {
  constexpr int BM = kSimtBM, BN = kSimtBN, BK = kSimtBK;
  constexpr int LDA = BM + 4, LDB = BN + 4;  // +4: the transposed stores hit 32 distinct banks
  constexpr int ROW_STEP = kSimtThreads / BK;  // 16
  constexpr int A_ITERS = BM / ROW_STEP, B_ITERS = BN / ROW_STEP;  // 8, 4
  __shared__ __align__(16) float sA[2][BK][LDA];
  __shared__ __align__(16) float sB[2][BK][LDB];

  const T* const x = static_cast<const T*>(p.x);
  const T* const w = static_cast<const T*>(p.w);
  const int tid = threadIdx.x;
  const int group = blockIdx.z;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  const int kq = tid % BK;  // this thread's K offset within a tile
  const int row0 = tid / BK;

  const T* a_img[A_ITERS];
  int a_ih[A_ITERS], a_iw[A_ITERS];
  const int ohw = p.oh * p.ow;
#pragma unroll
  for (int i = 0; i < A_ITERS; ++i) {
    const int m = m0 + row0 + i * ROW_STEP;
    if (m < p.m) {
      const int img = m / ohw, rem = m - img * ohw;
      const int oh = rem / p.ow, ow = rem - oh * p.ow;
      a_img[i] = x + static_cast<int64_t>(img) * p.h * p.w_in * p.c + group * p.cg;
      a_ih[i] = oh * p.stride_h - p.pad_h;
      a_iw[i] = ow * p.stride_w - p.pad_w;
    } else {
      a_img[i] = x;
      a_ih[i] = -(1 << 29);
      a_iw[i] = 0;
    }
  }
  const T* b_row[B_ITERS];
  bool b_ok[B_ITERS];
#pragma unroll
  for (int j = 0; j < B_ITERS; ++j) {
    const int n = n0 + row0 + j * ROW_STEP;
    b_ok[j] = n < p.ocg;
    b_row[j] = b_ok[j] ? w + static_cast<int64_t>(group * p.ocg + n) * p.k + kq : w;
  }
  int ld_c = kq % p.cg, ld_tap = kq / p.cg;
  int ld_kh = ld_tap / p.kw, ld_kw = ld_tap - ld_kh * p.kw;
  const int k_tiles = (p.k + BK - 1) / BK;

  float ra[A_ITERS], rb[B_ITERS];
  auto fetch = [&](int kt) {
    const bool k_ok = ld_kh < p.kh;
    const int dh = ld_kh * p.dil_h, dw = ld_kw * p.dil_w;
#pragma unroll
    for (int i = 0; i < A_ITERS; ++i) {
      const int ih = a_ih[i] + dh, iw = a_iw[i] + dw;
      const bool ok = k_ok && static_cast<unsigned>(ih) < static_cast<unsigned>(p.h) &&
                      static_cast<unsigned>(iw) < static_cast<unsigned>(p.w_in);
      ra[i] = ok ? to_float(__ldg(a_img[i] + (ih * p.w_in + iw) * p.c + ld_c)) : 0.f;
    }
#pragma unroll
    for (int j = 0; j < B_ITERS; ++j) rb[j] = (k_ok && b_ok[j]) ? to_float(__ldg(b_row[j] + kt * BK)) : 0.f;
    ld_c += BK;
    while (ld_c >= p.cg) {
      ld_c -= p.cg;
      if (++ld_kw == p.kw) {
        ld_kw = 0;
        ++ld_kh;
      }
    }
  };
  auto stash = [&](int buf) {
#pragma unroll
    for (int i = 0; i < A_ITERS; ++i) sA[buf][kq][row0 + i * ROW_STEP] = ra[i];
#pragma unroll
    for (int j = 0; j < B_ITERS; ++j) sB[buf][kq][row0 + j * ROW_STEP] = rb[j];
  };

  const int tm = tid / 8, tn = tid % 8;  // 16 x 8 threads
  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

  fetch(0);
  stash(0);
  __syncthreads();
  for (int kt = 0; kt < k_tiles; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < k_tiles) fetch(kt + 1);
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      float a[8], b[8];
      const float4 a0 = *reinterpret_cast<const float4*>(&sA[buf][k][tm * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&sA[buf][k][64 + tm * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&sB[buf][k][tn * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&sB[buf][k][32 + tn * 4]);
      a[0] = a0.x; a[1] = a0.y; a[2] = a0.z; a[3] = a0.w;
      a[4] = a1.x; a[5] = a1.y; a[6] = a1.z; a[7] = a1.w;
      b[0] = b0.x; b[1] = b0.y; b[2] = b0.z; b[3] = b0.w;
      b[4] = b1.x; b[5] = b1.y; b[6] = b1.z; b[7] = b1.w;
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    if (kt + 1 < k_tiles) stash(buf ^ 1);
    __syncthreads();
  }

  T* const y = static_cast<T*>(p.y);
  const float* const bias = p.bias ? p.bias + group * p.ocg : nullptr;
  float bv[8];
  int cols[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    cols[j] = n0 + (j < 4 ? tn * 4 + j : 32 + tn * 4 + (j - 4));
    bv[j] = (bias && cols[j] < p.ocg) ? bias[cols[j]] : 0.f;
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int m = m0 + (i < 4 ? tm * 4 + i : 64 + tm * 4 + (i - 4));
    if (m >= p.m) continue;
    T* const row = y + static_cast<int64_t>(m) * p.oc + group * p.ocg;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (cols[j] < p.ocg) {
        row[cols[j]] = from_float<T>(clamp_value(acc[i][j] + bv[j], p.clamp_min, p.clamp_max));
      }
    }
  }
}

}  // namespace conv
}  // namespace cuda
}  // namespace pyfastcnn
