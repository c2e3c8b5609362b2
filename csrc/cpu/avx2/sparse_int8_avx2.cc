// Sparse INT8 convolution for AVX2 (see SparseInt8ConvArgs in kernels.h; the layout choice is
// explained in avx512/sparse_int8_avx512vnni.cc). Without VNNI, pmaddubsw would saturate at
// int16 on full-range bytes (255 * 127 * 2 > 32767), so bytes are widened instead: 4 pixels x 4
// channels of unsigned activations become 16 int16, the block's 4 weights are sign-extended and
// repeated, and vpmaddwd gives exact int32 pair sums (two per pixel, added at the end). A
// channel's 16-pixel vector takes four accumulators; two vectors (32 pixels) are done per pass
// over its blocks. The int32 sums of 16 channels are then handed pixel by pixel to the shared
// scalar epilogue (ref::int8_epilogue_row), as the AVX2 INT8 GEMM's results are.
#include <immintrin.h>

#include "pyfastcnn/kernels.h"
#include "../tile_loop.h"

namespace pyfastcnn {
namespace avx2 {
namespace {

constexpr int kMaxVectors = 8;  // 16-pixel vectors per task (same tiles as AVX-512)

__m256i widen_lo(__m256i v) { return _mm256_cvtepu8_epi16(_mm256_castsi256_si128(v)); }
__m256i widen_hi(__m256i v) { return _mm256_cvtepu8_epi16(_mm256_extracti128_si256(v, 1)); }

// Pixels 0..3 (lo) and 4..7 (hi) of 8, each as two int32 pair sums -> 8 pixel sums in order.
__m256i combine(__m256i lo, __m256i hi) {
  return _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo, hi), 0xD8);
}

// dst[0 .. 16 * vectors) = one channel's sums, vectors = 1 or 2.
template <int VECTORS>
void channel_sums(const uint8_t* base, const int32_t* block_k, const int32_t* values32,
                  int64_t count, const int32_t* k_offset, int32_t* dst) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0,
          b3 = a0;
  for (int64_t j = 0; j < count; ++j) {
    const uint8_t* p = base + k_offset[block_k[j]];
    const __m256i w = _mm256_cvtepi8_epi16(_mm_set1_epi32(values32[j]));
    const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32));
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(widen_lo(x0), w));
    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(widen_hi(x0), w));
    a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(widen_lo(x1), w));
    a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(widen_hi(x1), w));
    if constexpr (VECTORS == 2) {
      const __m256i x2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64));
      const __m256i x3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 96));
      b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(widen_lo(x2), w));
      b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(widen_hi(x2), w));
      b2 = _mm256_add_epi32(b2, _mm256_madd_epi16(widen_lo(x3), w));
      b3 = _mm256_add_epi32(b3, _mm256_madd_epi16(widen_hi(x3), w));
    }
  }
  __m256i* d = reinterpret_cast<__m256i*>(dst);
  _mm256_store_si256(d, combine(a0, a1));
  _mm256_store_si256(d + 1, combine(a2, a3));
  if constexpr (VECTORS == 2) {
    _mm256_store_si256(d + 2, combine(b0, b1));
    _mm256_store_si256(d + 3, combine(b2, b3));
  }
}

void task(const SparseInt8ConvArgs& a, int64_t n, int64_t q0, int64_t chunk_begin,
          int64_t chunk_end) {
  alignas(64) int32_t sums[16][kMaxVectors * 16];
  alignas(64) int32_t pixel[16];
  const int64_t left = a.q_count - q0 < a.tile ? a.q_count - q0 : a.tile;
  const int vectors = static_cast<int>((left + 15) / 16);
  const uint8_t* image = a.planes + n * a.image_bytes + 4 * q0;
  const int64_t OC = a.g.OC, ocg = a.g.OC / a.g.groups, OW = a.g.OW;
  const int64_t elem = a.epi.kind == Int8OutKind::i32 || a.epi.kind == Int8OutKind::f32 ? 4 : 1;
  const int64_t pixel_bytes = OC * elem;
  char* out_image = static_cast<char*>(a.out) + n * a.g.OH * OW * pixel_bytes;
  for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
    const int64_t oc0 = chunk * 16;
    const int count = static_cast<int>(OC - oc0 < 16 ? OC - oc0 : 16);
    for (int i = 0; i < count; ++i) {
      const int64_t oc = oc0 + i, begin = a.row_ptr[oc], blocks = a.row_ptr[oc + 1] - begin;
      const uint8_t* base = image + (oc / ocg) * a.group_bytes;
      for (int v = 0; v < vectors; v += 2) {
        if (v + 1 < vectors) {
          channel_sums<2>(base + 64 * v, a.block_k + begin, a.values32 + begin, blocks,
                          a.k_offset, sums[i] + 16 * v);
        } else {
          channel_sums<1>(base + 64 * v, a.block_k + begin, a.values32 + begin, blocks,
                          a.k_offset, sums[i] + 16 * v);
        }
      }
    }
    int64_t oh = q0 / a.Wq, ow = q0 % a.Wq;
    for (int64_t p = 0; p < left; ++p) {
      if (ow < OW) {
        for (int i = 0; i < count; ++i) pixel[i] = sums[i][p];
        ref::int8_epilogue_row(pixel, oc0, count, a.epi,
                               out_image + (oh * OW + ow) * pixel_bytes,
                               (n * a.g.OH + oh) * OW + ow);
      }
      if (++ow == a.Wq) {
        ow = 0;
        ++oh;
      }
    }
  }
}

}  // namespace

void sparse_int8_conv(const SparseInt8ConvArgs& args) {
  ref::sparse_int8_fill_planes(args);
  const int64_t chunks = (args.g.OC + 15) / 16;
  for_each_pixel_tile(args.g.N, args.q_count, args.tile, chunks,
                      [&](int64_t n, int64_t q0, int64_t chunk_begin, int64_t chunk_end) {
                        task(args, n, q0, chunk_begin, chunk_end);
                      });
}

}  // namespace avx2
}  // namespace pyfastcnn
