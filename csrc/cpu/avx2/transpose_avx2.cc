// AVX2 float transpose (see TransposeF32Args): 8 x 8 blocks through registers; the edges
// element by element.
#include <immintrin.h>

#include "pyfastcnn/kernels.h"

namespace pyfastcnn {
namespace avx2 {

void transpose_f32(const TransposeF32Args& a) {
  const int64_t full_rows = a.rows / 8 * 8, full_cols = a.cols / 8 * 8;
  for (int64_t j0 = 0; j0 < full_rows; j0 += 8) {
    for (int64_t c0 = 0; c0 < full_cols; c0 += 8) {
      __m256 r[8], t[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(a.in + (j0 + i) * a.in_ld + c0);
      for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
      }
      for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
      }
      // r[4q + k] holds, per 128-bit half h, element 4h + k of rows 4q .. 4q + 3.
      for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(a.out + (c0 + k) * a.out_ld + j0,
                         _mm256_permute2f128_ps(r[k], r[4 + k], 0x20));
        _mm256_storeu_ps(a.out + (c0 + 4 + k) * a.out_ld + j0,
                         _mm256_permute2f128_ps(r[k], r[4 + k], 0x31));
      }
    }
  }
  // Edges: the last rows (all columns) and the last columns (of the full rows).
  for (int64_t j = 0; j < a.rows; ++j) {
    for (int64_t c = (j < full_rows ? full_cols : 0); c < a.cols; ++c) {
      a.out[c * a.out_ld + j] = a.in[j * a.in_ld + c];
    }
  }
}

}  // namespace avx2
}  // namespace pyfastcnn
