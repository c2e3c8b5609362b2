// INT8 GEMM / implicit-GEMM conv on Hopper's warpgroup MMA (sm_90a only): wgmma.mma_async
// m64nNk32 (s8 or u8 times s8, s32 accumulate) reading both operands from shared memory through
// matrix descriptors, fed by the same 4-stage cp.async pipeline and address arithmetic as the
// mma.sync kernel (int8_igemm_kernel.cuh), 128 bytes of K per stage.
//
// CTA tile 128 x BN (BN = 128 or 256), 8 warps = 2 warpgroups, warpgroup w computing rows
// 64w..64w+63 with one m64nBNk32 per 32 bytes of K. Layouts relied on (PTX ISA, "Asynchronous
// Warpgroup Level Matrix Shared Memory Layout", "Matrix Descriptor Format", "Register
// Fragments" of wgmma .m64nNk32 integer):
//  - both operands K-major ("row" A, "col" B: the only integer form), 128-byte swizzle: rows of
//    128 bytes, 8-row atoms of 1024 bytes (1024-byte aligned), 16-byte chunk c of row r stored
//    at chunk c ^ (r % 8); descriptor: start address >> 4 (bits 0-13), leading byte offset
//    (unused for swizzled K-major; 1), stride byte offset 1024 >> 4 (bits 32-45: the next
//    8-row atom), base offset 0, swizzle mode 1 = 128B (bits 62-63). The k-th 32-byte slice of
//    K is addressed by adding 32 k to the start address (the swizzle applies to the address).
//  - accumulators: warp v of the warpgroup holds rows 16v..16v+15; register 4i + j of a lane
//    (g = lane / 4, t = lane % 4) is row g + 8 (j / 2), column 8i + 2t + (j % 2).
//  - shared memory written by cp.async (generic proxy) is made visible to wgmma (async proxy)
//    with fence.proxy.async.shared::cta before the barrier.
#pragma once
#include <cstdint>

#include "int8_igemm_kernel.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define PYFASTCNN_HAVE_WGMMA 1
#endif

namespace pyfastcnn {
namespace cuda {
namespace int8 {

constexpr int kWgThreads = 256;
constexpr int kWgBM = 128;
constexpr int kWgBK = 128;
constexpr int kWgStages = 4;

template <int BN>
struct WgTile {
  static constexpr int kABytes = kWgBM * kWgBK;
  static constexpr int kStageBytes = kABytes + BN * kWgBK;
  static constexpr int kSmemBytes = kWgStages * kStageBytes + 1024;  // + alignment slack
};

__device__ __forceinline__ uint32_t swizzle128(int row, int chunk) {
  return static_cast<uint32_t>(row * kWgBK + ((chunk ^ (row & 7)) << 4));
}

__device__ __forceinline__ uint64_t wgmma_desc(uint32_t smem_addr) {
  return static_cast<uint64_t>((smem_addr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) |
         (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

// Generated: one wrapper per (N, A type); `p` = scale-d true (D = A x B + D).
__device__ __forceinline__ void wgmma_m64n128k32_s8(uint32_t (&d)[64], uint64_t desc_a, uint64_t desc_b) {
#if defined(PYFASTCNN_HAVE_WGMMA)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, "
      "%18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, "
      "%34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, "
      "%50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p;\n"
      "}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]),
        "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]),
        "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]),
        "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]),
        "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]),
        "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]),
        "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]),
        "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]),
        "+r"(d[62]), "+r"(d[63])
      : "l"(desc_a), "l"(desc_b));
#else
  (void)d; (void)desc_a; (void)desc_b;
  __trap();
#endif
}

__device__ __forceinline__ void wgmma_m64n128k32_u8(uint32_t (&d)[64], uint64_t desc_a, uint64_t desc_b) {
#if defined(PYFASTCNN_HAVE_WGMMA)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.u8.s8 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, "
      "%18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, "
      "%34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, "
      "%50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p;\n"
      "}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]),
        "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]),
        "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]),
        "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]),
        "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]),
        "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]),
        "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]),
        "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]),
        "+r"(d[62]), "+r"(d[63])
      : "l"(desc_a), "l"(desc_b));
#else
  (void)d; (void)desc_a; (void)desc_b;
  __trap();
#endif
}

__device__ __forceinline__ void wgmma_m64n256k32_s8(uint32_t (&d)[128], uint64_t desc_a, uint64_t desc_b) {
#if defined(PYFASTCNN_HAVE_WGMMA)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k32.s32.s8.s8 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, "
      "%18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, "
      "%34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, "
      "%50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, "
      "%66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, "
      "%82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, "
      "%98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, "
      "%111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, "
      "%124, %125, %126, %127}, "
      "%128, %129, p;\n"
      "}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]),
        "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]),
        "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]),
        "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]),
        "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]),
        "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]),
        "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]),
        "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]),
        "+r"(d[62]), "+r"(d[63]), "+r"(d[64]), "+r"(d[65]), "+r"(d[66]), "+r"(d[67]),
        "+r"(d[68]), "+r"(d[69]), "+r"(d[70]), "+r"(d[71]), "+r"(d[72]), "+r"(d[73]),
        "+r"(d[74]), "+r"(d[75]), "+r"(d[76]), "+r"(d[77]), "+r"(d[78]), "+r"(d[79]),
        "+r"(d[80]), "+r"(d[81]), "+r"(d[82]), "+r"(d[83]), "+r"(d[84]), "+r"(d[85]),
        "+r"(d[86]), "+r"(d[87]), "+r"(d[88]), "+r"(d[89]), "+r"(d[90]), "+r"(d[91]),
        "+r"(d[92]), "+r"(d[93]), "+r"(d[94]), "+r"(d[95]), "+r"(d[96]), "+r"(d[97]),
        "+r"(d[98]), "+r"(d[99]), "+r"(d[100]), "+r"(d[101]), "+r"(d[102]), "+r"(d[103]),
        "+r"(d[104]), "+r"(d[105]), "+r"(d[106]), "+r"(d[107]), "+r"(d[108]), "+r"(d[109]),
        "+r"(d[110]), "+r"(d[111]), "+r"(d[112]), "+r"(d[113]), "+r"(d[114]), "+r"(d[115]),
        "+r"(d[116]), "+r"(d[117]), "+r"(d[118]), "+r"(d[119]), "+r"(d[120]), "+r"(d[121]),
        "+r"(d[122]), "+r"(d[123]), "+r"(d[124]), "+r"(d[125]), "+r"(d[126]), "+r"(d[127])
      : "l"(desc_a), "l"(desc_b));
#else
  (void)d; (void)desc_a; (void)desc_b;
  __trap();
#endif
}

__device__ __forceinline__ void wgmma_m64n256k32_u8(uint32_t (&d)[128], uint64_t desc_a, uint64_t desc_b) {
#if defined(PYFASTCNN_HAVE_WGMMA)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k32.s32.u8.s8 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, "
      "%18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, "
      "%34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, "
      "%50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, "
      "%66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, "
      "%82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, "
      "%98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, "
      "%111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, "
      "%124, %125, %126, %127}, "
      "%128, %129, p;\n"
      "}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]),
        "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]),
        "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]),
        "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]),
        "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]),
        "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]),
        "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]),
        "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]),
        "+r"(d[62]), "+r"(d[63]), "+r"(d[64]), "+r"(d[65]), "+r"(d[66]), "+r"(d[67]),
        "+r"(d[68]), "+r"(d[69]), "+r"(d[70]), "+r"(d[71]), "+r"(d[72]), "+r"(d[73]),
        "+r"(d[74]), "+r"(d[75]), "+r"(d[76]), "+r"(d[77]), "+r"(d[78]), "+r"(d[79]),
        "+r"(d[80]), "+r"(d[81]), "+r"(d[82]), "+r"(d[83]), "+r"(d[84]), "+r"(d[85]),
        "+r"(d[86]), "+r"(d[87]), "+r"(d[88]), "+r"(d[89]), "+r"(d[90]), "+r"(d[91]),
        "+r"(d[92]), "+r"(d[93]), "+r"(d[94]), "+r"(d[95]), "+r"(d[96]), "+r"(d[97]),
        "+r"(d[98]), "+r"(d[99]), "+r"(d[100]), "+r"(d[101]), "+r"(d[102]), "+r"(d[103]),
        "+r"(d[104]), "+r"(d[105]), "+r"(d[106]), "+r"(d[107]), "+r"(d[108]), "+r"(d[109]),
        "+r"(d[110]), "+r"(d[111]), "+r"(d[112]), "+r"(d[113]), "+r"(d[114]), "+r"(d[115]),
        "+r"(d[116]), "+r"(d[117]), "+r"(d[118]), "+r"(d[119]), "+r"(d[120]), "+r"(d[121]),
        "+r"(d[122]), "+r"(d[123]), "+r"(d[124]), "+r"(d[125]), "+r"(d[126]), "+r"(d[127])
      : "l"(desc_a), "l"(desc_b));
#else
  (void)d; (void)desc_a; (void)desc_b;
  __trap();
#endif
}

template <int BN, bool kSignedA>
__device__ __forceinline__ void wgmma_step(uint32_t (&d)[BN / 2], uint64_t a, uint64_t b) {
  if constexpr (BN == 128) {
    if constexpr (kSignedA) wgmma_m64n128k32_s8(d, a, b); else wgmma_m64n128k32_u8(d, a, b);
  } else {
    if constexpr (kSignedA) wgmma_m64n256k32_s8(d, a, b); else wgmma_m64n256k32_u8(d, a, b);
  }
}

template <int BN, bool kSignedA>
__global__ void __launch_bounds__(kWgThreads, 1) wgmma_kernel(const IgemmParams p) {
#if defined(PYFASTCNN_HAVE_WGMMA)
  using Tile = WgTile<BN>;
  constexpr int kAChunks = kWgBM * 8 / kWgThreads;  // 16-byte chunks per thread per stage
  constexpr int kBChunks = BN * 8 / kWgThreads;
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t smem_base = (raw + 1023u) & ~1023u;  // swizzle atoms start at 1024 bytes

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wg = warp >> 2;

  constexpr int kGroupM = 8;
  const int pid = blockIdx.x;
  const int width = kGroupM * p.tiles_n;
  const int first_m = (pid / width) * kGroupM;
  const int group_rows = min(p.tiles_m - first_m, kGroupM);
  const int tile_m = first_m + (pid % width) % group_rows;
  const int tile_n = (pid % width) / group_rows;
  const int group = blockIdx.y;
  const int m0 = tile_m * kWgBM, n0 = tile_n * BN;

  const int chunk = tid & 7;
  const int row0 = tid >> 3;
  const uint8_t* a_group = p.a + group * p.ag.group_stride;
  int64_t a_off[kAChunks];
  bool a_ok[kAChunks];
#pragma unroll
  for (int i = 0; i < kAChunks; ++i) {
    const int m = m0 + row0 + 32 * i;
    a_ok[i] = m < p.M;
    a_off[i] = a_ok[i] ? a_row_offset(p.ag, m) : 0;
  }
  const int8_t* b_rows = p.b + group * p.b_group_stride;
  // Tiles are loaded in order (0, 1, 2, ...): the cursor moves one tile per call.
  KCursor cursor;
  cursor.start(p.ag, chunk * 16);
  auto load_stage = [&](int slot, int ktile) {
    const int k = ktile * kWgBK + chunk * 16;
    const bool k_ok = k < p.K;
    const int64_t a_col = k_ok ? cursor.offset(p.ag) : 0;
    cursor.advance(p.ag, kWgBK);
    const uint32_t sa = smem_base + slot * Tile::kStageBytes;
    const uint32_t sb = sa + Tile::kABytes;
#pragma unroll
    for (int i = 0; i < kAChunks; ++i) {
      const bool ok = a_ok[i] && k_ok;
      cp_async_16(sa + swizzle128(row0 + 32 * i, chunk), a_group + (ok ? a_off[i] + a_col : 0),
                  ok);
    }
#pragma unroll
    for (int j = 0; j < kBChunks; ++j) {
      const int n = n0 + row0 + 32 * j;
      const bool ok = n < p.N && k_ok;
      cp_async_16(sb + swizzle128(row0 + 32 * j, chunk), b_rows + (ok ? n * p.ldb + k : 0), ok);
    }
  };

  uint32_t acc[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0;

  // Prefetch distance kWgStages - 2: tile kt + 2 goes into the slot of tile kt - 2, whose
  // wgmmas every warpgroup has retired (wait_group 1 at the end of iteration kt - 1) before the
  // barrier of iteration kt; the wgmmas of tile kt - 1 may still run while tile kt is issued.
  constexpr int kAhead = kWgStages - 2;
  const int k_tiles = (p.K + kWgBK - 1) / kWgBK;
#pragma unroll
  for (int s = 0; s < kAhead; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kAhead - 1>();  // committed: kAhead + kt groups; tile kt has landed
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    const int next = kt + kAhead;
    if (next < k_tiles) load_stage(next % kWgStages, next);
    cp_async_commit();

    const uint32_t sa = smem_base + (kt % kWgStages) * Tile::kStageBytes + wg * 64 * kWgBK;
    const uint32_t sb = smem_base + (kt % kWgStages) * Tile::kStageBytes + Tile::kABytes;
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int ks = 0; ks < kWgBK / 32; ++ks) {
      wgmma_step<BN, kSignedA>(acc, wgmma_desc(sa + 32 * ks), wgmma_desc(sb + 32 * ks));
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  cp_async_wait<0>();

  const int g = lane >> 2, t = lane & 3;
  const int channel0 = group * p.N;
  const int row_base = m0 + wg * 64 + (warp & 3) * 16 + g;
#pragma unroll
  for (int i = 0; i < BN / 8; ++i) {
    const int col = n0 + 8 * i + 2 * t;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = row_base + 8 * h;
      if (row >= p.M) continue;
      const int64_t index = row * p.ldc + channel0 + col;
      if (col + 1 < p.N) {
        store_output_pair(p.epi, p.out, index, channel0 + col, acc[4 * i + 2 * h],
                          acc[4 * i + 2 * h + 1]);
      } else if (col < p.N) {
        store_output(p.epi, p.out, index, channel0 + col, acc[4 * i + 2 * h]);
      }
    }
  }
#else
  __trap();  // launched only where wgmma_available() says this binary has sm_90a code
#endif
}

// 1 when the running device executes this binary's sm_90a code (the launcher asks once).
__global__ void wgmma_probe_kernel(int* flag) {
#if defined(PYFASTCNN_HAVE_WGMMA)
  *flag = 1;
#else
  *flag = 0;
#endif
}

}  // namespace int8
}  // namespace cuda
}  // namespace pyfastcnn
