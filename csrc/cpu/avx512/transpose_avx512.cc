// AVX-512 float transpose (see TransposeF32Args): 16 x 16 blocks through registers, masked at
// the edges.
#include <immintrin.h>

#include "pyfastcnn/kernels.h"

namespace pyfastcnn {
namespace avx512 {
namespace {

__mmask16 mask16(int64_t valid) {
  return valid >= 16 ? static_cast<__mmask16>(0xFFFF)
                     : (valid <= 0 ? 0 : static_cast<__mmask16>((1u << valid) - 1));
}

// r[i] = row i of a 16 x 16 block of 32-bit values; on return r[j] = column j.
inline void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // Now r[4q + k] holds, per 128-bit lane L, elements (4L + k) of rows 4q .. 4q + 3.
  for (int k = 0; k < 4; ++k) {
    const __m512i a = _mm512_shuffle_i32x4(r[k], r[4 + k], 0x88);      // lanes 0, 2 | 0, 2
    const __m512i b = _mm512_shuffle_i32x4(r[k], r[4 + k], 0xDD);      // lanes 1, 3 | 1, 3
    const __m512i c = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0x88);
    const __m512i d = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0xDD);
    t[k] = _mm512_shuffle_i32x4(a, c, 0x88);       // lane 0 of rows 0-15: column k
    t[8 + k] = _mm512_shuffle_i32x4(a, c, 0xDD);   // lane 2: column 8 + k
    t[4 + k] = _mm512_shuffle_i32x4(b, d, 0x88);   // lane 1: column 4 + k
    t[12 + k] = _mm512_shuffle_i32x4(b, d, 0xDD);  // lane 3: column 12 + k
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

}  // namespace

void transpose_f32(const TransposeF32Args& a) {
  for (int64_t j0 = 0; j0 < a.rows; j0 += 16) {
    const int64_t rows = a.rows - j0 < 16 ? a.rows - j0 : 16;
    const __mmask16 row_mask = mask16(rows);
    for (int64_t c0 = 0; c0 < a.cols; c0 += 16) {
      const int64_t cols = a.cols - c0 < 16 ? a.cols - c0 : 16;
      const __mmask16 col_mask = mask16(cols);
      __m512i r[16];
      for (int i = 0; i < 16; ++i) {
        r[i] = i < rows ? _mm512_maskz_loadu_epi32(col_mask, a.in + (j0 + i) * a.in_ld + c0)
                        : _mm512_setzero_si512();
      }
      transpose16(r);
      for (int c = 0; c < cols; ++c) {
        _mm512_mask_storeu_epi32(a.out + (c0 + c) * a.out_ld + j0, row_mask, r[c]);
      }
    }
  }
}

}  // namespace avx512
}  // namespace pyfastcnn
