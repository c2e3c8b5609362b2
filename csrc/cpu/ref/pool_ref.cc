// Scalar INT8 pooling on NHWC codes: the ground truth for the vector kernels. Plain integer
// division here (the vector kernels divide by PoolDivisor's multiply and shift).
#include <cstdint>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace ref {
namespace {

int32_t code(const uint8_t* p, bool is_signed) {
  return is_signed ? static_cast<int32_t>(static_cast<int8_t>(*p)) : static_cast<int32_t>(*p);
}

}  // namespace

void quantized_max_pool2d(const QuantMaxPoolArgs& args) {
  const QuantMaxPoolArgs a = args;
  const int32_t lowest = a.is_signed ? -128 : 0;
  parallel_for(a.N * a.OH, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / a.OH, oh = row % a.OH;
      const int64_t h0 = oh * a.stride_h - a.pad_h;
      for (int64_t ow = 0; ow < a.OW; ++ow) {
        const int64_t w0 = ow * a.stride_w - a.pad_w;
        uint8_t* out = a.out + (row * a.OW + ow) * a.C;
        for (int64_t c = 0; c < a.C; ++c) {
          int32_t m = lowest;
          for (int64_t kh = a.kh_begin[oh]; kh < a.kh_end[oh]; ++kh) {
            for (int64_t kw = a.kw_begin[ow]; kw < a.kw_end[ow]; ++kw) {
              const int64_t h = h0 + kh * a.dil_h, w = w0 + kw * a.dil_w;
              const int32_t v = code(a.in + ((n * a.H + h) * a.W + w) * a.C + c, a.is_signed);
              m = v > m ? v : m;
            }
          }
          out[c] = static_cast<uint8_t>(m);
        }
      }
    }
  });
}

void quantized_adaptive_avg_pool2d(const QuantAdaptiveAvgPoolArgs& args) {
  const QuantAdaptiveAvgPoolArgs a = args;
  parallel_for(a.N * a.OH, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / a.OH, oh = row % a.OH;
      for (int64_t ow = 0; ow < a.OW; ++ow) {
        const int64_t count = (a.h_end[oh] - a.h_start[oh]) * (a.w_end[ow] - a.w_start[ow]);
        uint8_t* out = a.out + (row * a.OW + ow) * a.C;
        for (int64_t c = 0; c < a.C; ++c) {
          int64_t sum = 0;
          for (int64_t h = a.h_start[oh]; h < a.h_end[oh]; ++h) {
            for (int64_t w = a.w_start[ow]; w < a.w_end[ow]; ++w) {
              sum += code(a.in + ((n * a.H + h) * a.W + w) * a.C + c, a.is_signed);
            }
          }
          // Round half to even on a non-negative dividend: int8 sums shifted by 128 * count
          // (an even shift of the quotient, so the rounding is unchanged).
          const int64_t shift = a.is_signed ? 128 : 0;
          const int64_t s = sum + shift * count;
          int64_t q = s / count;
          const int64_t r2 = 2 * (s - q * count);
          if (r2 > count || (r2 == count && (q & 1))) ++q;
          out[c] = static_cast<uint8_t>(q - shift);
        }
      }
    }
  });
}

}  // namespace ref
}  // namespace pyfastcnn
