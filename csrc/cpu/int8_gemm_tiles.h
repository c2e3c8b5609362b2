// Tile loop of the INT8 GEMM kernels that return int32 (AVX2, AVX-512BW). Each ISA
// instantiates it with a micro-kernel type from its own namespace, so every instantiation is a
// distinct symbol compiled with that ISA's flags (no shared inline code across ISA units).
//
// Micro provides MR, NR and run(rows, a, lda, packed, panel, offset, c, ldc, cols, shape).
#pragma once
#include <cstdint>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {

template <class Micro>
void int8_gemm_tiles(const uint8_t* a, int64_t lda, const void* packed, const int32_t* offset,
                     int32_t* c, int64_t ldc, Int8GemmShape s) {
  const int64_t row_blocks = (s.M + Micro::MR - 1) / Micro::MR;
  const int64_t panels = (s.N + Micro::NR - 1) / Micro::NR;
  parallel_for(row_blocks * panels, 4, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = t / row_blocks, m0 = (t % row_blocks) * Micro::MR, n0 = p * Micro::NR;
      const int rows = static_cast<int>(s.M - m0 < Micro::MR ? s.M - m0 : Micro::MR);
      const int cols = static_cast<int>(s.N - n0 < Micro::NR ? s.N - n0 : Micro::NR);
      Micro::run(rows, a + m0 * lda, lda, packed, p, offset ? offset + n0 : nullptr,
                 c + m0 * ldc + n0, ldc, cols, s);
    }
  });
}

}  // namespace pyfastcnn
