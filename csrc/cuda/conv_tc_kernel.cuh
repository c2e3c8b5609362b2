// Implicit-GEMM conv on tensor cores (float16/bfloat16 in, FP32 accumulate), fused bias + clamp.
//
// CTA tile BM x BN x BK = 128 x BN x 32 over (pixels, output channels of one group, K), warps
// arranged WARPS_M x WARPS_N, each warp 64 x 32 = 4 x 4 mma.m16n8k16 tiles. The K loop is a
// STAGES-deep cp.async pipeline: A (the im2col rows of the tile's pixels) and B (weight rows) are
// gathered 16 bytes at a time straight from NHWC activations and [OC][KH][KW][Cg] weights;
// padding taps, pixel tails, channel tails and the K tail are zero-filled by cp.async itself
// (src-size 0). Needs Cg % 8 == 0 so a 16-byte chunk never straddles two taps.
//
// Shared memory rows are BK + 8 elements (80 bytes): the 8 rows an ldmatrix phase reads start at
// 16-byte slots 0, 5, 10, ... (mod 8) = all 8 distinct slots of a 128-byte line, so ldmatrix
// reads are free of bank conflicts without a swizzle (the 16-byte cp.async stores of a quarter
// warp, two rows x four chunks, collide at most 2-way).
#pragma once
#include "conv_common.cuh"

namespace pyfastcnn {
namespace cuda {
namespace conv {

constexpr int kTcBM = 128;
constexpr int kTcBK = 32;
constexpr int kTcLds = kTcBK + 8;  // elements per shared-memory row

template <int BN, int STAGES>
constexpr int tc_smem_bytes() {
  // Pipeline buffers; the epilogue reuses them for a BM x (BN + 8) output tile (smaller).
  return STAGES * (kTcBM + BN) * kTcLds * 2;
}

template <typename T, int BN, int WARPS_M, int WARPS_N, int STAGES>
__global__ void __launch_bounds__(WARPS_M * WARPS_N * 32)
    conv_tc_kernel(const Params p) {
  constexpr int BM = kTcBM, BK = kTcBK, LDS = kTcLds;
  constexpr int THREADS = WARPS_M * WARPS_N * 32;
  constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
  constexpr int MT = WM / 16, NT = WN / 8;
  constexpr int CHUNKS = BK / 8;              // 16-byte chunks per tile row
  constexpr int ROW_STEP = THREADS / CHUNKS;  // rows apart of one thread's loads
  constexpr int A_ITERS = BM / ROW_STEP, B_ITERS = BN / ROW_STEP;
  static_assert(WM == 64 && WN == 32, "the fragment loops below assume 64 x 32 warp tiles");
  static_assert(BM % ROW_STEP == 0 && BN % ROW_STEP == 0, "whole rows per thread");
  static_assert(2 * (BN + 8) * BM <= STAGES * (BM + BN) * LDS * 2, "epilogue tile fits");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* const sA = reinterpret_cast<T*>(smem_raw);  // [STAGES][BM][LDS]
  T* const sB = sA + STAGES * BM * LDS;          // [STAGES][BN][LDS]

  const T* const x = static_cast<const T*>(p.x);
  const T* const w = static_cast<const T*>(p.w);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp / WARPS_N, warp_n = warp % WARPS_N;
  const int group = blockIdx.z;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  const int kc = (tid % CHUNKS) * 8;  // this thread's chunk within a K tile (fixed)
  const int row0 = tid / CHUNKS;

  // Per pixel row this thread loads: its image's base, and the top-left input tap. Rows past M
  // get a tap far outside the image, so every load of theirs is a zero-fill.
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
    b_row[j] = b_ok[j] ? w + static_cast<int64_t>(group * p.ocg + n) * p.k + kc : w;
  }

  // K position of this thread's next chunk to load, as (kernel row, kernel column, channel).
  int ld_c = kc % p.cg, ld_tap = kc / p.cg;
  int ld_kh = ld_tap / p.kw, ld_kw = ld_tap - ld_kh * p.kw;
  const int k_tiles = (p.k + BK - 1) / BK;

  auto load_tile = [&](int stage, int kt) {
    const bool k_ok = ld_kh < p.kh;  // false past K (the tail of the last tile)
    const int dh = ld_kh * p.dil_h, dw = ld_kw * p.dil_w;
    T* const a_dst = sA + stage * BM * LDS + row0 * LDS + kc;
#pragma unroll
    for (int i = 0; i < A_ITERS; ++i) {
      const int ih = a_ih[i] + dh, iw = a_iw[i] + dw;
      const bool ok = k_ok && static_cast<unsigned>(ih) < static_cast<unsigned>(p.h) &&
                      static_cast<unsigned>(iw) < static_cast<unsigned>(p.w_in);
      const T* src = ok ? a_img[i] + (ih * p.w_in + iw) * p.c + ld_c : x;
      cp_async_16(a_dst + i * ROW_STEP * LDS, src, ok);
    }
    T* const b_dst = sB + stage * BN * LDS + row0 * LDS + kc;
#pragma unroll
    for (int j = 0; j < B_ITERS; ++j) {
      const bool ok = k_ok && b_ok[j];
      cp_async_16(b_dst + j * ROW_STEP * LDS, ok ? b_row[j] + kt * BK : w, ok);
    }
    // Advance by BK along K: channels first, then kernel columns, then rows.
    ld_c += BK;
    while (ld_c >= p.cg) {
      ld_c -= p.cg;
      if (++ld_kw == p.kw) {
        ld_kw = 0;
        ++ld_kh;
      }
    }
  };

  float acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < k_tiles) load_tile(s, s);
    cp_async_commit();  // (empty groups keep the wait counts uniform)
  }

  // ldmatrix row addresses of this lane, relative to a stage:
  //   A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15)
  //      = a[0..3] of the mma's A fragment.
  //   B: matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
  //      = b[0], b[1] of n-tile 0, then b[0], b[1] of n-tile 1 (B stored n-major, k contiguous,
  //      which is the mma's "col" B: no transpose).
  const int a_lane_off = (warp_m * WM + (lane & 15)) * LDS + (lane >> 4) * 8;
  const int b_lane_off =
      (warp_n * WN + (lane & 7) + ((lane >> 4) << 3)) * LDS + ((lane >> 3) & 1) * 8;

  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<STAGES - 2>();  // tile kt has landed (for this thread's copies)
    __syncthreads();              // ... for everyone's, and stage kt-1 is free again
    const int next = kt + STAGES - 1;
    if (next < k_tiles) load_tile(next % STAGES, next);
    cp_async_commit();

    const T* const a_s = sA + (kt % STAGES) * BM * LDS + a_lane_off;
    const T* const b_s = sB + (kt % STAGES) * BN * LDS + b_lane_off;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t af[MT][4], bf[NT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) ldmatrix_x4(af[mt], a_s + mt * 16 * LDS + kk);
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t r[4];
        ldmatrix_x4(r, b_s + np * 16 * LDS + kk);
        bf[2 * np][0] = r[0];
        bf[2 * np][1] = r[1];
        bf[2 * np + 1][0] = r[2];
        bf[2 * np + 1][1] = r[3];
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mma_16816<T>(acc[mt][nt], af[mt], bf[nt]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // all warps done with the pipeline buffers: reuse them for the output tile

  // Epilogue: bias + clamp in FP32, round once to T, stage the tile in shared memory, then write
  // whole 16-byte row chunks (coalesced) where the channel layout allows.
  // (BN + 8) * 2 bytes per row: the 8 rows of one fragment store start 4 banks apart, so the
  // warp's 32 4-byte stores hit 32 distinct banks.
  constexpr int LDC = BN + 8;
  T* const sC = reinterpret_cast<T*>(smem_raw);
  const int g = lane >> 2, t = lane & 3;
  const float* const bias = p.bias ? p.bias + group * p.ocg : nullptr;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int col = warp_n * WN + nt * 8 + 2 * t;
    const int n = n0 + col;
    const float b0 = (bias && n < p.ocg) ? bias[n] : 0.f;
    const float b1 = (bias && n + 1 < p.ocg) ? bias[n + 1] : 0.f;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = warp_m * WM + mt * 16 + g + half * 8;
        store_pair(sC + row * LDC + col,
                   clamp_value(acc[mt][nt][2 * half] + b0, p.clamp_min, p.clamp_max),
                   clamp_value(acc[mt][nt][2 * half + 1] + b1, p.clamp_min, p.clamp_max));
      }
    }
  }
  __syncthreads();

  T* const y = static_cast<T*>(p.y);
  const bool vec_ok = (p.oc % 8 == 0) && (p.ocg % 8 == 0) &&
                      (reinterpret_cast<uintptr_t>(p.y) % 16 == 0);
  constexpr int OUT_CHUNKS = BN / 8;
  for (int idx = tid; idx < BM * OUT_CHUNKS; idx += THREADS) {
    const int row = idx / OUT_CHUNKS, chunk = idx - row * OUT_CHUNKS;
    const int m = m0 + row;
    const int n = n0 + chunk * 8;
    if (m >= p.m || n >= p.ocg) continue;
    const T* const src = sC + row * LDC + chunk * 8;
    T* const dst = y + static_cast<int64_t>(m) * p.oc + group * p.ocg + n;
    if (vec_ok && n + 8 <= p.ocg) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    } else {
      const int count = min(8, p.ocg - n);
      for (int e = 0; e < count; ++e) dst[e] = src[e];
    }
  }
}

}  // namespace conv
}  // namespace cuda
}  // namespace pyfastcnn
