// Scalar INT8 depthwise conv (see Int8DepthwiseArgs): the ground truth of the vector kernels.
// Sums wrap modulo 2^32 (unsigned arithmetic), like the INT8 GEMM reference.
#include <vector>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace ref {

void int8_depthwise(const Int8DepthwiseArgs& a) {
  const int64_t C = a.C;
  const int64_t out_size = a.epi.kind == Int8OutKind::i32 || a.epi.kind == Int8OutKind::f32 ? 4 : 1;
  const auto value = [&](uint8_t code) -> uint32_t {
    return a.x_signed ? static_cast<uint32_t>(static_cast<int8_t>(code)) : code;
  };
  parallel_for(a.N * a.OH, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> acc(C);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / a.OH, oh = row % a.OH;
      for (int64_t ow = 0; ow < a.OW; ++ow) {
        std::fill(acc.begin(), acc.end(), 0u);
        for (int64_t kh = 0; kh < a.KH; ++kh) {
          const int64_t ih = oh * a.stride_h - a.pad_top + kh * a.dil_h;
          for (int64_t kw = 0; kw < a.KW; ++kw) {
            const int64_t iw = ow * a.stride_w - a.pad_left + kw * a.dil_w;
            const bool inside = ih >= 0 && ih < a.H && iw >= 0 && iw < a.W;
            const uint8_t* px = a.x + ((n * a.H + ih) * a.W + iw) * C;
            const int32_t* w = a.weight + (kh * a.KW + kw) * a.Cp;
            for (int64_t c = 0; c < C; ++c) {
              const int16_t wc = static_cast<int16_t>(w[c] & 0xFFFF);  // the pair (w, 0)
              acc[c] += value(inside ? px[c] : a.zero_point) * static_cast<uint32_t>(wc);
            }
          }
        }
        const int64_t m = row * a.OW + ow;
        int8_epilogue_row(reinterpret_cast<const int32_t*>(acc.data()), 0, C, a.epi,
                          static_cast<char*>(a.out) + m * C * out_size, m);
      }
    }
  });
}

}  // namespace ref
}  // namespace pyfastcnn
