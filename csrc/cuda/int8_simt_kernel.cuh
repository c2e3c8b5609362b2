// INT8 kernels on CUDA cores: the fallback GEMM for shapes or alignments the tensor-core kernel
// does not take (any K, any strides of B), and a direct conv, one thread per output element,
// for depthwise and other convs with few channels per group. Plain int32 arithmetic (wrapping,
// done in uint32 so overflow is defined), the same epilogue as the tensor-core kernel.
#pragma once
#include <cstdint>

#include "int8_common.cuh"

namespace pyfastcnn {
namespace cuda {
namespace int8 {

template <bool kSigned>
__device__ __forceinline__ int32_t load_code(const uint8_t* p) {
  return kSigned ? static_cast<int32_t>(static_cast<int8_t>(*p)) : static_cast<int32_t>(*p);
}

constexpr int kSimtThreads = 256;
constexpr int kSimtTile = 64;  // outputs per CTA: 64 x 64, 4 x 4 per thread
constexpr int kSimtK = 16;

// out[m, n] = epilogue(sum_k a[m * lda + k] * b[k * sbk + n * sbn]); grid (M tiles, N tiles).
template <bool kSignedA>
__global__ void __launch_bounds__(kSimtThreads)
    simt_gemm_kernel(const uint8_t* __restrict__ a, int64_t lda, const int8_t* __restrict__ b,
                     int64_t sbk, int64_t sbn, int M, int N, int K, void* out, int64_t ldc,
                     const Epilogue epi) {
  __shared__ int32_t as[kSimtK][kSimtTile + 4];
  __shared__ int32_t bs[kSimtK][kSimtTile + 4];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int m0 = blockIdx.x * kSimtTile, n0 = blockIdx.y * kSimtTile;
  uint32_t acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += kSimtK) {
#pragma unroll
    for (int i = 0; i < (kSimtK * kSimtTile) / kSimtThreads; ++i) {
      const int idx = tid + i * kSimtThreads;
      {  // A: consecutive threads walk k within a row
        const int r = idx / kSimtK, c = idx % kSimtK;
        const int m = m0 + r, k = k0 + c;
        as[c][r] = (m < M && k < K) ? load_code<kSignedA>(a + m * lda + k) : 0;
      }
      {  // B: consecutive threads walk n within a k row
        const int r = idx / kSimtTile, c = idx % kSimtTile;
        const int k = k0 + r, n = n0 + c;
        bs[r][c] = (k < K && n < N) ? static_cast<int32_t>(b[k * sbk + n * sbn]) : 0;
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSimtK; ++kk) {
      int32_t av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = as[kk][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = bs[kk][tx * 4 + j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += static_cast<uint32_t>(av[i] * bv[j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty * 4 + i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx * 4 + j;
      if (n < N) store_output(epi, out, m * ldc + n, n, acc[i][j]);
    }
  }
}

struct DirectConvParams {
  const uint8_t* x;  // NHWC [batch, Hp, Wp, C], C = groups * cg
  int Hp, Wp, C;
  const int8_t* w;  // [OC, KH * KW * cg]
  int KH, KW, cg, ocg, OC;
  int stride_h, stride_w, dil_h, dil_w, OH, OW;
  int64_t total;  // batch * OH * OW * OC
  void* out;      // NHWC [batch * OH * OW, OC]
  Epilogue epi;
};

// One thread per output element; consecutive threads take consecutive output channels, so
// their activation reads (depthwise: consecutive channels) coalesce.
template <bool kSignedA>
__global__ void __launch_bounds__(kSimtThreads) direct_conv_kernel(const DirectConvParams p) {
  const int64_t tap_h = static_cast<int64_t>(p.dil_h) * p.Wp * p.C;
  const int64_t tap_w = static_cast<int64_t>(p.dil_w) * p.C;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < p.total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int oc = static_cast<int>(idx % p.OC);
    const int64_t pix = idx / p.OC;
    const int ow = static_cast<int>(pix % p.OW);
    const int64_t rest = pix / p.OW;
    const int oh = static_cast<int>(rest % p.OH);
    const int64_t img = rest / p.OH;
    const int grp = oc / p.ocg;
    const uint8_t* base = p.x +
                          ((img * p.Hp + int64_t(oh) * p.stride_h) * p.Wp +
                           int64_t(ow) * p.stride_w) * p.C +
                          int64_t(grp) * p.cg;
    const int8_t* w = p.w + int64_t(oc) * p.KH * p.KW * p.cg;
    uint32_t acc = 0;
    for (int kh = 0; kh < p.KH; ++kh) {
      for (int kw = 0; kw < p.KW; ++kw) {
        const uint8_t* src = base + kh * tap_h + kw * tap_w;
        for (int c = 0; c < p.cg; ++c) {
          acc += static_cast<uint32_t>(load_code<kSignedA>(src + c) * static_cast<int32_t>(__ldg(w + c)));
        }
        w += p.cg;
      }
    }
    store_output(p.epi, p.out, idx, oc, acc);
  }
}

}  // namespace int8
}  // namespace cuda
}  // namespace pyfastcnn
