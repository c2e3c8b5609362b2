// INT8 GEMM for AVX-512 VNNI. vpdpbusd multiplies unsigned by signed bytes, so A is shifted to
// unsigned (a + 128, a sign-bit flip) and the shift is undone by starting each column's sum at
// -128 * sum_k b[k][n]. All sums wrap modulo 2^32, so the result is exact whenever the true
// product fits int32. B packed as panels of 32 columns: [32 x int32 correction][K/4 x 128 bytes].
#include <immintrin.h>

#include <cstring>

#include "../int8_gemm_tiles.h"

namespace pyfastcnn {
namespace avx512_vnni {
namespace {

constexpr int kNR = 32, kMR = 6;
constexpr int64_t kPanelHeader = kNR * 4;  // bytes of the correction row

int64_t k_quads(int64_t K) { return (K + 3) / 4; }
int64_t panel_bytes(int64_t K) { return kPanelHeader + k_quads(K) * kNR * 4; }

// Four bytes of A as unsigned (a + 128).
int32_t quad(const int8_t* a) {
  uint32_t v;
  std::memcpy(&v, a, 4);
  return static_cast<int32_t>(v ^ 0x80808080u);
}

// The last, partial group of K: bytes past the end multiply zeros in B, any value will do.
int32_t tail_quad(const int8_t* a, int64_t available) {
  int8_t bytes[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < available; ++i) bytes[i] = a[i];
  return quad(bytes);
}

template <int MR>
void micro(const int8_t* a, int64_t lda, const int8_t* panel, int64_t K, int32_t* c, int64_t ldc,
           int cols) {
  const int32_t* correction = reinterpret_cast<const int32_t*>(panel);
  const int8_t* bp = panel + kPanelHeader;
  __m512i acc[MR][2];
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = _mm512_load_si512(correction);
    acc[r][1] = _mm512_load_si512(correction + 16);
  }
  const int64_t full = K / 4;
  for (int64_t kq = 0; kq < k_quads(K); ++kq) {
    const __m512i b0 = _mm512_load_si512(bp + kq * 128);
    const __m512i b1 = _mm512_load_si512(bp + kq * 128 + 64);
    for (int r = 0; r < MR; ++r) {
      const int8_t* ar = a + r * lda + 4 * kq;
      const __m512i av = _mm512_set1_epi32(kq < full ? quad(ar) : tail_quad(ar, K - 4 * kq));
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, b0);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, b1);
    }
  }
  const __mmask16 m0 = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
  const __mmask16 m1 = cols <= 16 ? 0 : static_cast<__mmask16>((1u << (cols - 16)) - 1);
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_epi32(c + r * ldc, m0, acc[r][0]);
    _mm512_mask_storeu_epi32(c + r * ldc + 16, m1, acc[r][1]);
  }
}

struct Micro {
  static constexpr int MR = kMR, NR = kNR;
  static void run(int rows, const int8_t* a, int64_t lda, const void* packed, int64_t p,
                  int32_t* c, int64_t ldc, int cols, Int8GemmShape s) {
    const int8_t* panel = static_cast<const int8_t*>(packed) + p * panel_bytes(s.K);
    switch (rows) {
      case 6: return micro<6>(a, lda, panel, s.K, c, ldc, cols);
      case 5: return micro<5>(a, lda, panel, s.K, c, ldc, cols);
      case 4: return micro<4>(a, lda, panel, s.K, c, ldc, cols);
      case 3: return micro<3>(a, lda, panel, s.K, c, ldc, cols);
      case 2: return micro<2>(a, lda, panel, s.K, c, ldc, cols);
      default: return micro<1>(a, lda, panel, s.K, c, ldc, cols);
    }
  }
};

}  // namespace

size_t int8_packed_b_bytes(int64_t K, int64_t N) {
  return static_cast<size_t>((N + kNR - 1) / kNR * panel_bytes(K));
}

void int8_pack_b(const int8_t* b, int64_t ldb, int64_t K, int64_t N, void* packed) {
  int8_t* dst = static_cast<int8_t*>(packed);
  const int64_t panels = (N + kNR - 1) / kNR, kq_count = k_quads(K);
  for (int64_t p = 0; p < panels; ++p, dst += panel_bytes(K)) {
    int32_t* correction = reinterpret_cast<int32_t*>(dst);
    int8_t* body = dst + kPanelHeader;
    for (int j = 0; j < kNR; ++j) {
      const int64_t n = p * kNR + j;
      uint32_t sum = 0;
      for (int64_t kq = 0; kq < kq_count; ++kq) {
        // Column j of vector j/16 holds b[4kq .. 4kq+3][n] in its four bytes.
        int8_t* lane = body + kq * 128 + (j / 16) * 64 + (j % 16) * 4;
        for (int i = 0; i < 4; ++i) {
          const int64_t k = 4 * kq + i;
          lane[i] = (n < N && k < K) ? b[k * ldb + n] : 0;
          sum += static_cast<uint32_t>(static_cast<int32_t>(lane[i]));
        }
      }
      correction[j] = static_cast<int32_t>(0u - 128u * sum);
    }
  }
}

void int8_gemm_packed(const int8_t* a, int64_t lda, const void* packed_b, int32_t* c, int64_t ldc,
                      Int8GemmShape shape) {
  int8_gemm_tiles<Micro>(a, lda, packed_b, c, ldc, shape);
}

}  // namespace avx512_vnni
}  // namespace pyfastcnn
