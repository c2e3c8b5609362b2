// The store path shared by the AVX2 sparse INT8 kernels (blocks and groups): a chunk's int32
// sums, one row of pixels per output channel (in order or as SumOrder::lanes16), transposed to
// pixels and written through the requantization epilogue (8-bit outputs: store_chunk_codes;
// float and int32 outputs: int8_epilogue_avx2.h). Internal linkage, like that header.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "int8_epilogue_avx2.h"
#include "pyfastcnn/kernels.h"
#include "pyfastcnn/memory.h"

namespace pyfastcnn {
namespace avx2 {
namespace {

constexpr int kSparseTile = 128;  // virtual pixels per task at most (SparseInt8ConvArgs::tile)

// Each weight entry's plane offset, k_offset[block_k[i]] for the first `count` entries,
// resolved once per call: one dependent load per row address in the kernels' inner loops
// instead of two. (An AlignedBuffer, not a std::vector: no std:: containers in ISA units, see
// CMakeLists.txt.)
inline AlignedBuffer resolved_offsets(const SparseInt8ConvArgs& a, int64_t count) {
  AlignedBuffer buffer(static_cast<size_t>(count > 0 ? count : 1) * sizeof(int32_t));
  int32_t* offsets = static_cast<int32_t*>(buffer.data());
  for (int64_t i = 0; i < count; ++i) offsets[i] = a.k_offset[a.block_k[i]];
  return buffer;
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

// 4 rows of 8 int32 (one channel each) transposed within the 128-bit lanes: r[j] = [pixel j of
// the 4 channels | pixel 4 + j of the 4 channels].
inline void transpose4_lanes(__m256i r[4]) {
  const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
  r[0] = _mm256_unpacklo_epi64(t0, t2);
  r[1] = _mm256_unpackhi_epi64(t0, t2);
  r[2] = _mm256_unpacklo_epi64(t1, t3);
  r[3] = _mm256_unpackhi_epi64(t1, t3);
}

// How a chunk's rows of sums order their pixels: in order, or, per 16 pixels, as the group
// kernel's two accumulators leave them (its unpacks work within 128-bit lanes): [0-3 | 8-11]
// then [4-7 | 12-15]. Putting them back in order costs the kernel four lane-crossing shuffles
// per channel and 32 pixels; the 8-bit store path below takes either order for free.
enum class SumOrder { in_order, lanes16 };

// The first `count` (<= 16) residual codes at r, zero-padded; zeros for null r.
inline __m128i residual16(const uint8_t* r, int count) {
  if (!r) return _mm_setzero_si128();
  if (count >= 16) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(r));
  alignas(16) uint8_t tmp[16] = {};
  std::memcpy(tmp, r, static_cast<size_t>(count));
  return _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
}

// The 8-bit store path: no lane-crossing shuffle per pixel (vperm2i128, vpermq cost 8 and 3
// micro-ops on Zen 1; the per-chunk operand setup has a few). Sums of 4 channels are transposed
// within the lanes, the epilogue runs on that layout with its per-channel operands repeated in
// both lanes, and two packs leave one pixel's 16 codes in each lane. The result equals
// requantize_epi32's: the float clamp and the code-range clamp are one clamp to their
// intersection, and a NaN (passed through by max and min as their second operand) converts to
// INT32_MIN, which the saturating packs turn into the low code.
template <Int8OutKind KIND>
void store_chunk_codes(const SparseInt8ConvArgs& a, int32_t (*sums)[kSparseTile], int count,
                       int64_t oc0, int64_t n, int64_t q0, int64_t left, SumOrder order) {
  constexpr bool kSigned = KIND == Int8OutKind::s8;
  const Int8Epilogue& epi = a.epi;
  const int64_t OC = a.g.OC, OW = a.g.OW;
  uint8_t* out_image = static_cast<uint8_t*>(a.out) + n * a.g.OH * OW * OC;
  // Operands of channel quad k (channels oc0 + 4k ..) in both lanes.
  __m256i offset[4];
  __m256 scale[4], bias[4];
  for (int h = 0; h < 2; ++h) {
    const ChannelOperands8 c = channel_operands<KIND>(epi, oc0 + 8 * h, count - 8 * h);
    for (int k = 0; k < 2; ++k) {
      const int sel = k == 0 ? 0x44 : 0xEE;  // 64-bit lanes (0, 1, 0, 1) or (2, 3, 2, 3)
      offset[2 * h + k] = _mm256_permute4x64_epi64(c.offset, sel);
      scale[2 * h + k] = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(c.scale), sel));
      bias[2 * h + k] = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(c.bias), sel));
    }
  }
  // Clamp bounds: [clamp_min, clamp_max] within the code range (when they do not meet, the two
  // clamps in turn give the code-range end nearer the float range; with clamp_max < clamp_min,
  // which check_quant rejects, both give hi).
  const float code_lo = kSigned ? -128.0f : 0.0f, code_hi = kSigned ? 127.0f : 255.0f;
  float lo = epi.clamp_min > code_lo ? epi.clamp_min : code_lo;
  float hi = epi.clamp_max < code_hi ? epi.clamp_max : code_hi;
  if (lo > code_hi) lo = code_hi;
  if (hi < code_lo) hi = code_lo;
  const __m256 lo8 = _mm256_set1_ps(lo), hi8 = _mm256_set1_ps(hi);
  const __m256 res_scale = _mm256_set1_ps(epi.residual_scale);
  const __m256i res_zp = _mm256_set1_epi32(epi.residual_zero_point);
  int64_t oh = q0 / a.Wq, ow = q0 % a.Wq;  // of pixel q0 + p, stepped (no division per pixel)
  for (int64_t b0 = 0; b0 < left; b0 += 16) {
    // Where pixel b0 + i goes and its residual codes come from (null: a dropped column or past
    // the tile). Each entry is assigned once: GCC turns "clear, then fill" into rep stos, which
    // cost ~5% of a 1x1 layer on Zen 1.
    uint8_t* dst[16];
    const uint8_t* res_src[16];
    for (int i = 0; i < 16; ++i) {
      const bool live = b0 + i < left && ow < OW;
      dst[i] = live ? out_image + (oh * OW + ow) * OC + oc0 : nullptr;
      res_src[i] = live && epi.residual
                       ? epi.residual + ((n * a.g.OH + oh) * OW + ow) * epi.residual_ld + oc0
                       : nullptr;
      if (b0 + i < left) ow = ow + 1 < a.Wq ? ow + 1 : (++oh, 0);
    }
    for (int half = 0; half < 2; ++half) {  // (lanes16: a short block's pixels are in both)
      const int64_t p0 = b0 + 8 * half;
      __m256i quad[4][4];  // quad[k][j]: channels 4k .. 4k + 3, lane pixels j
      for (int k = 0; k < 4; ++k) {
        for (int c = 0; c < 4; ++c) {
          const int32_t* row = sums[4 * k + c] + p0;
          quad[k][c] = _mm256_load_si256(reinterpret_cast<const __m256i*>(row));
        }
        transpose4_lanes(quad[k]);
      }
      for (int j = 0; j < 4; ++j) {
        // The block's pixels in the low and high lane.
        const int px[2] = {order == SumOrder::in_order ? 8 * half + j : 4 * half + j,
                           order == SumOrder::in_order ? 8 * half + 4 + j : 8 + 4 * half + j};
        if (!dst[px[0]] && !dst[px[1]]) continue;
        __m256i r = _mm256_setzero_si256();
        if (epi.residual) {
          r = _mm256_inserti128_si256(_mm256_castsi128_si256(residual16(res_src[px[0]], count)),
                                      residual16(res_src[px[1]], count), 1);
        }
        __m256i codes[4];
        for (int k = 0; k < 4; ++k) {
          const __m256i acc = _mm256_add_epi32(quad[k][j], offset[k]);
          __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), scale[k], bias[k]);
          if (epi.residual) {
            // Bytes 4k .. 4k + 3 of each lane to its dwords, widened (signed: from the top byte).
            const char b = static_cast<char>(4 * k), z = static_cast<char>(0x80);
            __m256i rv;
            if (epi.residual_signed) {
              const __m256i top = _mm256_setr_epi8(z, z, z, b, z, z, z, b + 1, z, z, z, b + 2, z,
                                                   z, z, b + 3, z, z, z, b, z, z, z, b + 1, z, z,
                                                   z, b + 2, z, z, z, b + 3);
              rv = _mm256_srai_epi32(_mm256_shuffle_epi8(r, top), 24);
            } else {
              rv = _mm256_shuffle_epi8(r, _mm256_setr_epi8(b, z, z, z, b + 1, z, z, z, b + 2, z, z,
                                                           z, b + 3, z, z, z, b, z, z, z, b + 1, z,
                                                           z, z, b + 2, z, z, z, b + 3, z, z, z));
            }
            y = _mm256_add_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(rv, res_zp)),
                                               res_scale));
          }
          codes[k] = _mm256_cvtps_epi32(_mm256_min_ps(hi8, _mm256_max_ps(lo8, y)));
        }
        const __m256i w0 = _mm256_packs_epi32(codes[0], codes[1]);
        const __m256i w1 = _mm256_packs_epi32(codes[2], codes[3]);
        const __m256i bytes = kSigned ? _mm256_packs_epi16(w0, w1) : _mm256_packus_epi16(w0, w1);
        const __m128i lane[2] = {_mm256_castsi256_si128(bytes),
                                 _mm256_extracti128_si256(bytes, 1)};
        for (int h = 0; h < 2; ++h) {
          uint8_t* d = dst[px[h]];
          if (!d) continue;
          if (count >= 16) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d), lane[h]);
          } else {
            alignas(16) uint8_t tmp[16];
            _mm_store_si128(reinterpret_cast<__m128i*>(tmp), lane[h]);
            std::memcpy(d, tmp, static_cast<size_t>(count));
          }
        }
      }
    }
  }
}

// Writes output channels oc0 .. oc0 + count of the virtual pixels q0 .. q0 + left of image n:
// sums[i][p] is channel oc0 + i at pixel q0 + p, or at the pixel `order` puts there
// (zero-point offsets not yet added; rows i >= count are zeroed here). Columns ow >= OW are
// dropped.
template <Int8OutKind KIND>
void store_chunk(const SparseInt8ConvArgs& a, int32_t (*sums)[kSparseTile], int count,
                 int64_t oc0, int64_t n, int64_t q0, int64_t left,
                 SumOrder order = SumOrder::in_order) {
  for (int i = count; i < 16; ++i) std::memset(sums[i], 0, sizeof(sums[i]));  // no stale lanes
  if constexpr (KIND == Int8OutKind::u8 || KIND == Int8OutKind::s8) {
    store_chunk_codes<KIND>(a, sums, count, oc0, n, q0, left, order);
    return;
  }
  if (order == SumOrder::lanes16) {  // pixels back in order, 16 at a time
    for (int i = 0; i < count; ++i) {
      for (int64_t b0 = 0; b0 < left; b0 += 16) {
        __m256i* row = reinterpret_cast<__m256i*>(sums[i] + b0);
        const __m256i x = _mm256_load_si256(row), y = _mm256_load_si256(row + 1);
        _mm256_store_si256(row, _mm256_permute2x128_si256(x, y, 0x20));
        _mm256_store_si256(row + 1, _mm256_permute2x128_si256(x, y, 0x31));
      }
    }
  }
  const int64_t OC = a.g.OC, OW = a.g.OW;
  const int64_t pixel_bytes = OC * out_bytes(KIND);
  char* out_image = static_cast<char*>(a.out) + n * a.g.OH * OW * pixel_bytes;
  const ChannelOperands8 c0 = channel_operands<KIND>(a.epi, oc0, count);
  const ChannelOperands8 c1 = channel_operands<KIND>(a.epi, oc0 + 8, count - 8);
  int64_t oh = q0 / a.Wq, ow = q0 % a.Wq;  // of pixel q0 + p, stepped (no division per pixel)
  for (int64_t p0 = 0; p0 < left; p0 += 8) {
    __m256i lo[8], hi[8];
    for (int i = 0; i < 8; ++i) {
      lo[i] = _mm256_load_si256(reinterpret_cast<const __m256i*>(sums[i] + p0));
      hi[i] = _mm256_load_si256(reinterpret_cast<const __m256i*>(sums[i + 8] + p0));
    }
    transpose8(lo);
    transpose8(hi);
    for (int64_t p = p0; p < p0 + 8 && p < left; ++p, ow = ow + 1 < a.Wq ? ow + 1 : (++oh, 0)) {
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
