// Scalar float transpose (see TransposeF32Args), in 16 x 16 blocks so both sides are read and
// written a cache line at a time.
#include "pyfastcnn/kernels.h"

namespace pyfastcnn {
namespace ref {

void transpose_f32(const TransposeF32Args& a) {
  for (int64_t j0 = 0; j0 < a.rows; j0 += 16) {
    const int64_t j1 = a.rows < j0 + 16 ? a.rows : j0 + 16;
    for (int64_t c0 = 0; c0 < a.cols; c0 += 16) {
      const int64_t c1 = a.cols < c0 + 16 ? a.cols : c0 + 16;
      for (int64_t c = c0; c < c1; ++c) {
        for (int64_t j = j0; j < j1; ++j) a.out[c * a.out_ld + j] = a.in[j * a.in_ld + c];
      }
    }
  }
}

}  // namespace ref
}  // namespace pyfastcnn
