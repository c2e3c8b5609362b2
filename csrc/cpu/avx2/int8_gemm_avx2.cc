// INT8 GEMM for AVX2+FMA: bytes sign-extended to int16 pairs and multiplied by vpmaddwd (exact
// for every int8 value). B packed as panels of 16 columns x k-pairs.
#include <immintrin.h>

#include "../int8_gemm_tiles.h"

namespace pyfastcnn {
namespace avx2 {
namespace {

constexpr int kNR = 16, kMR = 4;

int64_t k_pairs(int64_t K) { return (K + 1) / 2; }

int32_t pair(uint8_t a0, uint8_t a1) {
  return static_cast<int32_t>(static_cast<uint32_t>(a0) | (static_cast<uint32_t>(a1) << 16));
}

template <int MR>
void micro(const uint8_t* a, int64_t lda, const int16_t* bp, int64_t K, const int32_t* offset,
           int32_t* c, int64_t ldc, int cols) {
  __m256i acc[MR][2];
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), lane);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols - 8), lane);
  const __m256i init0 = offset ? _mm256_maskload_epi32(offset, m0) : _mm256_setzero_si256();
  const __m256i init1 = offset ? _mm256_maskload_epi32(offset + 8, m1) : _mm256_setzero_si256();
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = init0;
    acc[r][1] = init1;
  }
  const int64_t full = K / 2;
  for (int64_t kp = 0; kp < k_pairs(K); ++kp) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp + kp * 32));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp + kp * 32 + 16));
    for (int r = 0; r < MR; ++r) {
      const uint8_t* ar = a + r * lda + 2 * kp;
      const __m256i av = _mm256_set1_epi32(pair(ar[0], kp < full ? ar[1] : 0));
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(b0, av));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(b1, av));
    }
  }
  for (int r = 0; r < MR; ++r) {
    _mm256_maskstore_epi32(c + r * ldc, m0, acc[r][0]);
    _mm256_maskstore_epi32(c + r * ldc + 8, m1, acc[r][1]);
  }
}

struct Micro {
  static constexpr int MR = kMR, NR = kNR;
  static void run(int rows, const uint8_t* a, int64_t lda, const void* packed, int64_t p,
                  const int32_t* offset, int32_t* c, int64_t ldc, int cols, Int8GemmShape s) {
    const int16_t* bp = static_cast<const int16_t*>(packed) + p * k_pairs(s.K) * 32;
    switch (rows) {
      case 4: return micro<4>(a, lda, bp, s.K, offset, c, ldc, cols);
      case 3: return micro<3>(a, lda, bp, s.K, offset, c, ldc, cols);
      case 2: return micro<2>(a, lda, bp, s.K, offset, c, ldc, cols);
      default: return micro<1>(a, lda, bp, s.K, offset, c, ldc, cols);
    }
  }
};

}  // namespace

size_t int8_packed_b_bytes(int64_t K, int64_t N) {
  return static_cast<size_t>((N + kNR - 1) / kNR * k_pairs(K) * 32 * sizeof(int16_t));
}

void int8_pack_b(const int8_t* b, int64_t ldb, int64_t K, int64_t N, void* packed) {
  int16_t* dst = static_cast<int16_t*>(packed);
  const int64_t panels = (N + kNR - 1) / kNR, kp_count = k_pairs(K);
  for (int64_t p = 0; p < panels; ++p) {
    for (int64_t kp = 0; kp < kp_count; ++kp, dst += 32) {
      for (int j = 0; j < kNR; ++j) {
        const int64_t n = p * kNR + j, k = 2 * kp;
        int16_t* lane = dst + (j / 8) * 16 + (j % 8) * 2;
        lane[0] = n < N ? b[k * ldb + n] : 0;
        lane[1] = (n < N && k + 1 < K) ? b[(k + 1) * ldb + n] : 0;
      }
    }
  }
}

// Integer output only (Int8OutKind::i32): ops.cc applies other epilogues in a second pass.
void int8_gemm(const Int8GemmArgs& args) {
  int8_gemm_tiles<Micro>(args.a, args.lda, args.packed_b, args.epi.col_offset,
                         static_cast<int32_t*>(args.c), args.ldc, args.shape);
}

}  // namespace avx2
}  // namespace pyfastcnn
