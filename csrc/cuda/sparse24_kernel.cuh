// 2:4 structured-sparse convolution as an implicit GEMM on sparse tensor cores.
//
//   D[oc][pixel] = sum_k A[oc][k] * B[k][pixel],  k = (kh * KW + kw) * Cg + c  (per group)
//
// A (the weight, 2:4 sparse along k) is the sparse operand of
// mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.{f16,bf16}.{f16,bf16}.f32;
// B is gathered from the NHWC activations: for a fixed pixel, 8 consecutive k are 8 consecutive
// channels of one tap (C/groups % 8 == 0, or 4 with kVec == 4), so one cp.async moves them, and
// taps in the padding or k beyond K are zero-filled by the copy itself (src-size 0).
//
// Fragment layouts (PTX ISA, "Matrix Fragments for sparse mma.m16n8k32 with .f16 and .bf16
// types"; groupID g = lane >> 2, threadID_in_group t = lane & 3):
//   A: 4 x .b32, each two kept values of one 4-wide chunk: reg0 row g chunk t, reg1 row g+8
//      chunk t, reg2 row g chunk t+4, reg3 row g+8 chunk t+4 (chunks of the 32-wide k step).
//      The host stores them per lane, so a lane reads its 16 bytes in one LDS.128.
//   metadata: with sparsity selector 0, lanes t = 0 and t = 1 supply it: lane t covers chunks
//      4t..4t+3; bits [4j, 4j+3] chunk 4t+j of row g, bits [16+4j, 16+4j+3] the same chunk of row
//      g+8; each nibble is idx0 | idx1 << 2 with idx0 < idx1 (ordered metadata), idx0 the
//      position in the chunk of the value in the low half of the A register.
//   B: 4 x .b32: reg r holds B[k = 2t + 8r, 2t + 8r + 1][n = g] (low half first). With B staged
//      as [pixel][k] rows in shared memory, ldmatrix.x4 (non-transposed) of the four 8x8 blocks
//      k = 0-7, 8-15, 16-23, 24-31 of 8 pixel rows yields exactly these registers.
//   C/D: c0, c1 row g, columns 2t, 2t+1; c2, c3 row g+8 (as for dense m16n8k16).
//
// Tiling: CTA kBM (oc: 64 or 128) x 128 (pixels) x 64 (k) per stage, 3-stage cp.async pipeline,
// 4 warps as 2 (oc) x 2 (pixels), each warp kBM/2 x 64 = kMT x 8 mma tiles (kMT = kBM / 32; 128
// rows halve the shared-memory reads of B per mma when a group has >= 128 output channels).
// B rows are padded to 72 halves
// (144 bytes) so both the cp.async stores and the ldmatrix reads are free of bank conflicts.
// The epilogue adds bias, applies ReLU, and goes through shared memory to store 16-byte vectors
// of the NHWC output.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace pyfastcnn {
namespace cuda {
namespace sparse24 {

constexpr int kBN = 128;   // output pixels per CTA
constexpr int kBK = 64;    // k per pipeline stage (two mma k-steps)
constexpr int kStages = 3;
constexpr int kThreads = 128;
constexpr int kBRow = kBK + 8;  // padded B row (halves)
constexpr int kAFragBytes = 32 * 16;  // one 16 x 32 (dense k) A tile: 32 lanes x 4 registers
constexpr int kMetaBytes = 32 * 4;    // its metadata: 32 lanes x 1 register
constexpr int kStageB = kBN * kBRow * 2;

// Shared-memory plan of the CTA with kMT m16 tiles per warp (kBM = 32 * kMT output channels).
template <int kMT>
struct Tile {
  static constexpr int kBM = 32 * kMT;
  static constexpr int kCRow = kBM + 8;  // padded C row (halves) in the epilogue
  static constexpr int kATiles = (kBM / 16) * (kBK / 32);
  static constexpr int kStageA = kATiles * kAFragBytes;
  static constexpr int kStageMeta = kATiles * kMetaBytes;
  static constexpr int kStageBytes = kStageA + kStageMeta + kStageB;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  static_assert(kBN * kCRow * 2 <= kSmemBytes, "epilogue tile must fit the pipeline buffers");
  static_assert(kStageA % 128 == 0 && kStageMeta % 128 == 0, "16-byte aligned stage parts");
  static_assert(kATiles * 32 % kThreads == 0 && kATiles * 8 <= kThreads, "loader split");
};

struct Params {
  int n, c, h, w, oc, kh, kw, oh, ow;
  int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int c_per_group, oc_per_group;
  int k;          // KH * KW * Cg
  int k_tiles;    // k_padded / kBK
  int m_tiles16;  // m_padded / 16 (per group)
  int num_pixels;
  bool relu;
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

template <int kBytes>
__device__ __forceinline__ void cp_async(uint32_t dst, const void* src, bool valid) {
  // src-size 0 copies nothing and fills the kBytes destination with zeros.
  const int src_size = valid ? kBytes : 0;
  if (kBytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_size));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(src),
                 "n"(kBytes), "r"(src_size));
  }
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

template <typename T>
struct MmaSp;
template <>
struct MmaSp<__half> {
  __device__ __forceinline__ static void run(float (&d)[4], const uint4& a, const uint32_t (&b)[4],
                                             uint32_t e) {
    asm volatile(
        "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]),
          "r"(e));
  }
};
template <>
struct MmaSp<__nv_bfloat16> {
  __device__ __forceinline__ static void run(float (&d)[4], const uint4& a, const uint32_t (&b)[4],
                                             uint32_t e) {
    asm volatile(
        "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]),
          "r"(e));
  }
};

template <typename T>
__device__ __forceinline__ T cvt(float v);
template <>
__device__ __forceinline__ __half cvt<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 cvt<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// kVec: channels per cp.async of B (8: 16 bytes, needs Cg % 8 == 0; 4: 8 bytes, Cg % 4 == 0).
// kMT: m16 tiles per warp (2: 64 output channels per CTA, 4: 128).
template <typename T, int kVec, int kMT>
__global__ void __launch_bounds__(kThreads)
    sparse24_conv2d_kernel(const T* __restrict__ input, const uint4* __restrict__ frags,
                           const uint32_t* __restrict__ meta, const float* __restrict__ bias,
                           T* __restrict__ output, Params p) {
  using Plan = Tile<kMT>;
  constexpr int kBM = Plan::kBM;
  constexpr int kATiles = Plan::kATiles;
  constexpr int kStageA = Plan::kStageA;
  constexpr int kStageMeta = Plan::kStageMeta;
  constexpr int kStageBytes = Plan::kStageBytes;
  constexpr int kCRow = Plan::kCRow;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int warp_m = warp >> 1;  // 0..1: kBM / 2 output channels each
  const int warp_n = warp & 1;   // 0..1: 64 pixels each
  const int group = blockIdx.z;
  const int m_block = blockIdx.y;  // kBM-row block within the group
  const int pixel0 = blockIdx.x * kBN;

  // ---- B producer: this thread's pixels and k column ------------------------------------------
  constexpr int kChunksPerRow = kBK / kVec;            // 8 or 16 chunks per pixel row
  constexpr int kRowsPerPass = kThreads / kChunksPerRow;  // 16 or 8 pixel rows per pass
  constexpr int kPasses = kBN / kRowsPerPass;             // 8 or 16
  const int chunk = tid % kChunksPerRow;
  const int row0 = tid / kChunksPerRow;
  const int ohw = p.oh * p.ow;
  // Per owned pixel: image base offset (elements), and the top-left input corner. A pixel past
  // the end gets a corner far outside the image so every tap reads as padding.
  int img_base[kPasses];  // input has fewer than 2^31 elements (launcher check)
  int corner_h[kPasses], corner_w[kPasses];
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    const int pix = pixel0 + row0 + i * kRowsPerPass;
    if (pix < p.num_pixels) {
      const int img = pix / ohw;
      const int rest = pix - img * ohw;
      const int oy = rest / p.ow;
      const int ox = rest - oy * p.ow;
      img_base[i] = img * p.h * p.w * p.c + group * p.c_per_group;
      corner_h[i] = oy * p.stride_h - p.pad_h;
      corner_w[i] = ox * p.stride_w - p.pad_w;
    } else {
      img_base[i] = 0;
      corner_h[i] = -(1 << 28);
      corner_w[i] = 0;
    }
  }

  // ---- A producer: fragments of this CTA's kBM/16 m16 tiles x 2 k32 tiles per stage ------------
  const int64_t a_tile0 = (int64_t(group) * p.m_tiles16 + m_block * (kBM / 16)) * (p.k_tiles * 2);

  // This thread's B column k = kt * kBK + chunk * kVec, tracked as (channel, kx, ky): stages are
  // loaded in order kt = 0, 1, 2, ..., so each load advances it by kBK without dividing.
  int b_k = chunk * kVec;
  int b_ch, b_kx, b_ky;
  {
    const int tap = b_k / p.c_per_group;
    b_ch = b_k - tap * p.c_per_group;
    b_ky = tap / p.kw;
    b_kx = tap - b_ky * p.kw;
  }

  auto load_stage = [&](int stage, int kt) {
    unsigned char* base = smem + stage * kStageBytes;
    // A: kBM/16 m-tiles x (2 k32 tiles x 32 lanes x 16 B): runs of 1 KB, 16-byte chunks.
#pragma unroll
    for (int i = tid; i < kATiles * 32; i += kThreads) {
      const int mt = i / 64;
      const int within = i % 64;  // (k32 tile, lane)
      const uint4* src = frags + (a_tile0 + int64_t(mt) * p.k_tiles * 2 + kt * 2) * 32 + within;
      cp_async<16>(smem_addr(base + i * 16), src, true);
    }
    // Metadata: kBM/16 runs of 2 x 32 words, 16 chunks of 16 bytes each.
    if (tid < kATiles * 8) {
      const int mt = tid / 16;
      const int within = tid % 16;  // 16-byte chunk within the run (4 words)
      const uint32_t* src = meta + (a_tile0 + int64_t(mt) * p.k_tiles * 2 + kt * 2) * 32 +
                            within * 4;
      cp_async<16>(smem_addr(base + kStageA + tid * 16), src, true);
    }
    // B: kBN pixel rows x kBK halves, gathered from NHWC with zero fill.
    const int ch = b_ch;
    const int dy = b_ky * p.dil_h;
    const int dx = b_kx * p.dil_w;
    const bool k_ok = b_k < p.k;
    b_k += kBK;
    b_ch += kBK;
    while (b_ch >= p.c_per_group) {
      b_ch -= p.c_per_group;
      if (++b_kx == p.kw) {
        b_kx = 0;
        ++b_ky;
      }
    }
    unsigned char* b_base = base + kStageA + kStageMeta;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int r = row0 + i * kRowsPerPass;
      const int ih = corner_h[i] + dy;
      const int iw = corner_w[i] + dx;
      const bool ok = k_ok && unsigned(ih) < unsigned(p.h) && unsigned(iw) < unsigned(p.w);
      const T* src = ok ? input + img_base[i] + (ih * p.w + iw) * p.c + ch : input;
      cp_async<kVec * 2>(smem_addr(b_base + (r * kBRow + chunk * kVec) * 2), src, ok);
    }
  };

  float acc[kMT][8][4];
#pragma unroll
  for (int i = 0; i < kMT; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < p.k_tiles) load_stage(s, s);
    cp_async_commit();
  }

  // ldmatrix row addresses: lane supplies row (lane & 7) of block (lane >> 3) = k offset 8 * block.
  const int ld_row = lane & 7;
  const int ld_k = (lane >> 3) * 8;

  for (int kt = 0; kt < p.k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    {
      const int next = kt + kStages - 1;
      if (next < p.k_tiles) load_stage(next % kStages, next);
      cp_async_commit();
    }
    const unsigned char* base = smem + (kt % kStages) * kStageBytes;
    const uint4* a_s = reinterpret_cast<const uint4*>(base);
    const uint32_t* m_s = reinterpret_cast<const uint32_t*>(base + kStageA);
    const uint32_t b_s = smem_addr(base + kStageA + kStageMeta);
#pragma unroll
    for (int ks = 0; ks < kBK / 32; ++ks) {
      uint4 a[kMT];
      uint32_t e[kMT];
#pragma unroll
      for (int i = 0; i < kMT; ++i) {
        const int mt = warp_m * kMT + i;
        a[i] = a_s[(mt * 2 + ks) * 32 + lane];
        e[i] = m_s[(mt * 2 + ks) * 32 + lane];
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        uint32_t b[4];
        const int prow = warp_n * 64 + j * 8 + ld_row;
        ldmatrix_x4(b, b_s + (prow * kBRow + ks * 32 + ld_k) * 2);
#pragma unroll
        for (int i = 0; i < kMT; ++i) MmaSp<T>::run(acc[i][j], a[i], b, e[i]);
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  // ---- epilogue: bias, ReLU, stage C as [pixel][oc] in shared memory, 16-byte NHWC stores ----
  T* c_s = reinterpret_cast<T*>(smem);
  const int g = lane >> 2;
  const int t = lane & 3;
  const int oc_block0 = m_block * kBM;  // within the group
#pragma unroll
  for (int i = 0; i < kMT; ++i) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int m = warp_m * (kBM / 2) + i * 16 + half * 8 + g;  // row within the CTA tile
      const int oc_g = oc_block0 + m;
      const float b = (bias != nullptr && oc_g < p.oc_per_group)
                          ? __ldg(bias + group * p.oc_per_group + oc_g)
                          : 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int col = 0; col < 2; ++col) {
          float v = acc[i][j][half * 2 + col] + b;
          if (p.relu) v = v < 0.f ? 0.f : v;  // NaN stays NaN
          const int n = warp_n * 64 + j * 8 + t * 2 + col;
          c_s[n * kCRow + m] = cvt<T>(v);
        }
      }
    }
  }
  __syncthreads();
  const int rows_here = min(kBM, p.oc_per_group - oc_block0);
  const bool vec_ok = (p.oc % 8 == 0) && (p.oc_per_group % 8 == 0);
  for (int i = tid; i < kBN * (kBM / 8); i += kThreads) {
    const int n = i / (kBM / 8);
    const int m8 = (i % (kBM / 8)) * 8;
    const int pix = pixel0 + n;
    if (pix >= p.num_pixels || m8 >= rows_here) continue;
    T* dst = output + int64_t(pix) * p.oc + group * p.oc_per_group + oc_block0 + m8;
    const T* src = c_s + n * kCRow + m8;
    if (vec_ok && m8 + 8 <= rows_here) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    } else {
      for (int q = 0; q < 8 && m8 + q < rows_here; ++q) dst[q] = src[q];
    }
  }
}

}  // namespace sparse24
}  // namespace cuda
}  // namespace pyfastcnn
