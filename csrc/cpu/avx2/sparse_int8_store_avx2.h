// The store path shared by the AVX2 sparse INT8 kernels (blocks and groups): a chunk's int32
// sums, one row of pixels per output channel, transposed to pixels 8 at a time and written
// through the vector epilogue (int8_epilogue_avx2.h). Internal linkage, like that header.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "int8_epilogue_avx2.h"
#include "pyfastcnn/kernels.h"

namespace pyfastcnn {
namespace avx2 {
namespace {

constexpr int kSparseTile = 128;  // virtual pixels per task at most (SparseInt8ConvArgs::tile)

// Each weight entry's plane offset, k_offset[block_k[i]] for the first `count` entries,
// resolved once per call: one dependent load per row address in the kernels' inner loops
// instead of two.
inline std::vector<int32_t> resolved_offsets(const SparseInt8ConvArgs& a, int64_t count) {
  std::vector<int32_t> offsets(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) offsets[i] = a.k_offset[a.block_k[i]];
  return offsets;
}

// In-register 8x8 transpose of int32 rows r[0..8).
inline void transpose8(__m256i r[8]) {
  __m256i t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
    u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
    u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
    u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
  }
}

// Writes output channels oc0 .. oc0 + count of the virtual pixels q0 .. q0 + left of image n:
// sums[i][p] is channel oc0 + i at pixel q0 + p (zero-point offsets not yet added; rows
// i >= count are zeroed here). Columns ow >= OW are dropped.
template <Int8OutKind KIND>
void store_chunk(const SparseInt8ConvArgs& a, int32_t (*sums)[kSparseTile], int count,
                 int64_t oc0, int64_t n, int64_t q0, int64_t left) {
  for (int i = count; i < 16; ++i) std::memset(sums[i], 0, sizeof(sums[i]));  // no stale lanes
  const int64_t OC = a.g.OC, OW = a.g.OW;
  const int64_t pixel_bytes = OC * out_bytes(KIND);
  char* out_image = static_cast<char*>(a.out) + n * a.g.OH * OW * pixel_bytes;
  const ChannelOperands8 c0 = channel_operands<KIND>(a.epi, oc0, count);
  const ChannelOperands8 c1 = channel_operands<KIND>(a.epi, oc0 + 8, count - 8);
  for (int64_t p0 = 0; p0 < left; p0 += 8) {
    __m256i lo[8], hi[8];
    for (int i = 0; i < 8; ++i) {
      lo[i] = _mm256_load_si256(reinterpret_cast<const __m256i*>(sums[i] + p0));
      hi[i] = _mm256_load_si256(reinterpret_cast<const __m256i*>(sums[i + 8] + p0));
    }
    transpose8(lo);
    transpose8(hi);
    for (int64_t p = p0; p < p0 + 8 && p < left; ++p) {
      const int64_t q = q0 + p, oh = q / a.Wq, ow = q % a.Wq;
      if (ow >= OW) continue;
      const int64_t m = (n * a.g.OH + oh) * OW + ow;
      const uint8_t* res = a.epi.residual ? a.epi.residual + m * a.epi.residual_ld : nullptr;
      store_row16<KIND>(_mm256_add_epi32(lo[p - p0], c0.offset),
                        _mm256_add_epi32(hi[p - p0], c1.offset), c0, c1, a.epi,
                        out_image + (oh * OW + ow) * pixel_bytes, oc0, count, res);
    }
  }
}

}  // namespace
}  // namespace avx2
}  // namespace pyfastcnn
