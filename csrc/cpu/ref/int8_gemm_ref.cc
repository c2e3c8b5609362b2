// Scalar INT8 GEMM: the ground truth. "Packing" is a dense copy of B; sums wrap modulo 2^32
// like torch._int_mm (unsigned arithmetic, so the wrap is defined behaviour).
#include <algorithm>
#include <cstring>
#include <vector>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace ref {

size_t int8_packed_b_bytes(int64_t K, int64_t N) { return static_cast<size_t>(K * N); }

void int8_pack_b(const int8_t* b, int64_t ldb, int64_t K, int64_t N, void* packed) {
  int8_t* dst = static_cast<int8_t*>(packed);
  for (int64_t k = 0; k < K; ++k) std::memcpy(dst + k * N, b + k * ldb, N);
}

void int8_gemm_packed(const int8_t* a, int64_t lda, const void* packed_b, int32_t* c, int64_t ldc,
                      Int8GemmShape s) {
  const int8_t* b = static_cast<const int8_t*>(packed_b);
  parallel_for(s.M, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> acc(s.N);
    for (int64_t m = begin; m < end; ++m) {
      std::fill(acc.begin(), acc.end(), 0u);
      for (int64_t k = 0; k < s.K; ++k) {
        const int32_t av = a[m * lda + k];
        const int8_t* brow = b + k * s.N;
        for (int64_t n = 0; n < s.N; ++n) acc[n] += static_cast<uint32_t>(av * brow[n]);
      }
      for (int64_t n = 0; n < s.N; ++n) c[m * ldc + n] = static_cast<int32_t>(acc[n]);
    }
  });
}

}  // namespace ref
}  // namespace pyfastcnn
