// INT8 GEMM / implicit-GEMM conv on tensor cores (sm_80+): mma.sync m16n8k32 (s8 or u8 times
// s8, s32 accumulate), a 4-stage cp.async pipeline through shared memory, ldmatrix fragment
// loads from XOR-swizzled rows (no bank conflicts), the requantization epilogue from registers.
//
// Tile: BM x BN outputs per CTA, K consumed 64 bytes per stage; 8 warps as 2 (M) x 4 (N), each
// warp owning MT m16 tiles x NT n8 tiles. Shared memory per stage: A [BM][64] then B [BN][64]
// (B is the transposed weight, [N][K], so both operands are K-contiguous rows of 64 bytes).
//
// Fragment layouts relied on (PTX ISA, "Matrix Fragments for mma.m16n8k32", integer types;
// "ldmatrix"), with g = lane / 4 and t = lane % 4:
//   A (16 x 32, row): reg0 = row g, k 4t..4t+3; reg1 = row g+8, same k; reg2 = row g,
//     k 16+4t..; reg3 = row g+8, k 16+4t..  (4 bytes per register, low byte = lowest k)
//   B (32 x 8, col): reg0 = column n = g, k 4t..4t+3; reg1 = column g, k 16+4t..
//   C (16 x 8, s32): c0, c1 = row g, columns 2t, 2t+1; c2, c3 = row g+8, same columns
//   ldmatrix .x4 .b16: lanes 8j..8j+7 give the 8 row addresses of matrix j (16 bytes each);
//     lane l receives in register j bytes 4*(l%4)..+3 of row l/4 of matrix j.
// So for A, matrix j = (rows 8*(j&1).., k chunk j>>1) gives reg j; for B, loading (n rows
// 0-7, chunk 0), (n 0-7, chunk 1), (n 8-15, chunk 0), (n 8-15, chunk 1) gives two n8 tiles.
#pragma once
#include <cstdint>

#include "int8_common.cuh"

namespace pyfastcnn {
namespace cuda {
namespace int8 {

constexpr int kIgemmThreads = 256;
constexpr int kBK = 64;  // bytes (= int8 elements) of K per pipeline stage
constexpr int kStages = 4;

template <int MT, int NT>
struct IgemmTile {
  static constexpr int BM = 32 * MT;  // 2 warps along M x MT m16 tiles
  static constexpr int BN = 32 * NT;  // 4 warps along N x NT n8 tiles
  static constexpr int kStageBytes = (BM + BN) * kBK;
  static constexpr int kSmemBytes = kStages * kStageBytes;
};

struct IgemmParams {
  const uint8_t* a;  // activation bytes (int8 when signed)
  AGeometry ag;
  int M, K;  // K: multiple of 16
  const int8_t* b;  // [groups][N][ldb]
  int64_t ldb, b_group_stride;
  int N;  // output channels per group
  void* out;
  int64_t ldc;  // elements between output rows (groups * N)
  Epilogue epi;
  int tiles_m, tiles_n;
};

// Byte offset of 16-byte chunk `chunk` (0..3) of smem row `row` (64-byte rows). The chunk index
// is XORed with bits 1-2 of the row: the 8 rows an ldmatrix phase reads (same logical chunk)
// land in 8 distinct 16-byte bank groups of the two 128-byte lines they span.
__device__ __forceinline__ uint32_t swizzle(int row, int chunk) {
  return static_cast<uint32_t>(row * kBK + ((chunk ^ ((row >> 1) & 3)) << 4));
}

// 16 bytes global -> shared, bypassing L1; src_size 0 zero-fills without reading `src`.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int src_size = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_size));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

template <bool kSignedA>
__device__ __forceinline__ void mma_16832(uint32_t (&c)[4], const uint32_t (&a)[4],
                                          uint32_t b0, uint32_t b1) {
  // No .satfinite: integer sums wrap modulo 2^32 (torch._int_mm semantics).
  if (kSignedA) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

template <int MT, int NT, bool kSignedA>
__global__ void __launch_bounds__(kIgemmThreads)
    igemm_kernel(const IgemmParams p) {
  using Tile = IgemmTile<MT, NT>;
  constexpr int BM = Tile::BM, BN = Tile::BN;
  constexpr int kAChunks = BM / 64;  // 16-byte chunks each thread copies per stage
  constexpr int kBChunks = BN / 64;
  static_assert(NT % 2 == 0, "B fragments are loaded for n8 tile pairs");
  extern __shared__ __align__(128) uint8_t smem[];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp >> 2, warp_n = warp & 3;

  // Tiles in groups of 8 along M share their B tiles while they are hot in L2.
  constexpr int kGroupM = 8;
  const int pid = blockIdx.x;
  const int width = kGroupM * p.tiles_n;
  const int first_m = (pid / width) * kGroupM;
  const int group_rows = min(p.tiles_m - first_m, kGroupM);
  const int tile_m = first_m + (pid % width) % group_rows;
  const int tile_n = (pid % width) / group_rows;
  const int group = blockIdx.y;
  const int m0 = tile_m * BM, n0 = tile_n * BN;

  // Each thread copies chunk (tid % 4) of rows tid / 4 + 64 i: row offsets are fixed for the
  // whole K loop, only the column offset moves.
  const int chunk = tid & 3;
  const int row0 = tid >> 2;
  const uint8_t* a_group = p.a + group * p.ag.group_stride;
  int64_t a_off[kAChunks];
  bool a_ok[kAChunks];
#pragma unroll
  for (int i = 0; i < kAChunks; ++i) {
    const int m = m0 + row0 + 64 * i;
    a_ok[i] = m < p.M;
    a_off[i] = a_ok[i] ? a_row_offset(p.ag, m) : 0;
  }
  const int8_t* b_row[kBChunks];
  bool b_ok[kBChunks];
#pragma unroll
  for (int j = 0; j < kBChunks; ++j) {
    const int n = n0 + row0 + 64 * j;
    b_ok[j] = n < p.N;
    b_row[j] = p.b + group * p.b_group_stride + (b_ok[j] ? n : 0) * p.ldb;
  }

  const uint32_t smem_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  // Tiles are loaded in order (0, 1, 2, ...): the cursor moves one tile per call.
  KCursor cursor;
  cursor.start(p.ag, chunk * 16);
  auto load_stage = [&](int slot, int ktile) {
    const int k = ktile * kBK + chunk * 16;
    const bool k_ok = k < p.K;  // K % 16 == 0: a chunk is entirely inside or outside
    const int64_t a_col = k_ok ? cursor.offset(p.ag) : 0;
    cursor.advance(p.ag, kBK);
    const uint32_t sa = smem_base + slot * Tile::kStageBytes;
    const uint32_t sb = sa + BM * kBK;
#pragma unroll
    for (int i = 0; i < kAChunks; ++i) {
      const bool ok = a_ok[i] && k_ok;
      cp_async_16(sa + swizzle(row0 + 64 * i, chunk), a_group + (ok ? a_off[i] + a_col : 0), ok);
    }
#pragma unroll
    for (int j = 0; j < kBChunks; ++j) {
      const bool ok = b_ok[j] && k_ok;
      cp_async_16(sb + swizzle(row0 + 64 * j, chunk), b_row[j] + (ok ? k : 0), ok);
    }
  };

  uint32_t acc[MT][NT][4];
#pragma unroll
  for (int mi = 0; mi < MT; ++mi)
#pragma unroll
    for (int ni = 0; ni < NT; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0;

  const int k_tiles = (p.K + kBK - 1) / kBK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();  // always: the group count stays in step with the tile index
  }

  for (int kt = 0; kt < k_tiles; ++kt) {
    // Groups committed so far: kStages - 1 + kt; at most kStages - 2 pending means tile kt has
    // landed (for this thread); the barrier publishes every thread's copies and also tells
    // that all warps are done with the slot refilled below (computed in iteration kt - 1).
    cp_async_wait<kStages - 2>();
    __syncthreads();
    const int next = kt + kStages - 1;
    if (next < k_tiles) load_stage(next % kStages, next);
    cp_async_commit();

    const uint32_t sa = smem_base + (kt % kStages) * Tile::kStageBytes;
    const uint32_t sb = sa + BM * kBK;
#pragma unroll
    for (int ks = 0; ks < kBK / 32; ++ks) {
      uint32_t af[MT][4];
      uint32_t bf[NT][2];
#pragma unroll
      for (int mi = 0; mi < MT; ++mi) {
        const int row = warp_m * (16 * MT) + mi * 16 + (lane & 15);
        ldmatrix_x4(af[mi], sa + swizzle(row, ks * 2 + (lane >> 4)));
      }
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        const int row = warp_n * (8 * NT) + np * 16 + (lane & 7) + ((lane >> 4) << 3);
        uint32_t r[4];
        ldmatrix_x4(r, sb + swizzle(row, ks * 2 + ((lane >> 3) & 1)));
        bf[2 * np][0] = r[0];
        bf[2 * np][1] = r[1];
        bf[2 * np + 1][0] = r[2];
        bf[2 * np + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < MT; ++mi)
#pragma unroll
        for (int ni = 0; ni < NT; ++ni) mma_16832<kSignedA>(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
    }
  }
  cp_async_wait<0>();

  const int g = lane >> 2, t = lane & 3;
  const int channel0 = group * p.N;
#pragma unroll
  for (int mi = 0; mi < MT; ++mi) {
#pragma unroll
    for (int ni = 0; ni < NT; ++ni) {
      const int col = n0 + warp_n * (8 * NT) + ni * 8 + 2 * t;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m0 + warp_m * (16 * MT) + mi * 16 + g + 8 * h;
        if (row >= p.M) continue;
        const int64_t index = row * p.ldc + channel0 + col;
        if (col + 1 < p.N) {
          store_output_pair(p.epi, p.out, index, channel0 + col, acc[mi][ni][2 * h],
                            acc[mi][ni][2 * h + 1]);
        } else if (col < p.N) {
          store_output(p.epi, p.out, index, channel0 + col, acc[mi][ni][2 * h]);
        }
      }
    }
  }
}

}  // namespace int8
}  // namespace cuda
}  // namespace pyfastcnn
