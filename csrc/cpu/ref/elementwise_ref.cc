// Scalar INT8 elementwise ops: the ground truth for the vector kernels. The float32 operations
// are the ones kernels.h spells out, one rounding each (compiled with -ffp-contract=off).
#include <cmath>
#include <cstdint>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace ref {
namespace {

constexpr int64_t kChunk = 16384;  // elements per parallel task

float clamp_code(float v, float lo, float hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

uint8_t quantize_one(float x, const QuantizeArgs& a) {
  float v = x / a.scale;
  if (v != v) v = 0.0f;
  const int32_t q = static_cast<int32_t>(std::nearbyint(clamp_code(v, a.lo, a.hi))) + a.zero_point;
  return static_cast<uint8_t>(q);  // q is in the code range: the low byte is the code
}

}  // namespace

void quantized_add(const QuantAddArgs& args) {
  const QuantAddArgs a = args;
  parallel_for((a.n + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
    const int64_t stop = end * kChunk < a.n ? end * kChunk : a.n;
    for (int64_t i = begin * kChunk; i < stop; ++i) {
      const float va = a.is_signed ? static_cast<float>(static_cast<int8_t>(a.a[i])) : a.a[i];
      const float vb = a.is_signed ? static_cast<float>(static_cast<int8_t>(a.b[i])) : a.b[i];
      const float t = a.ka * va;
      const float u = t + a.c;
      const float w = a.kb * vb;
      const float y = clamp_code(u + w, a.lo, a.hi);
      a.out[i] = static_cast<uint8_t>(static_cast<int32_t>(std::nearbyint(y)));
    }
  });
}

void quantize(const QuantizeArgs& args) {
  const QuantizeArgs a = args;
  const int64_t n = a.outer * a.channels * a.pixels;
  if (!a.transpose) {
    parallel_for((n + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
      const int64_t stop = end * kChunk < n ? end * kChunk : n;
      for (int64_t i = begin * kChunk; i < stop; ++i) a.out[i] = quantize_one(a.x[i], a);
    });
    return;
  }
  parallel_for(a.outer * a.pixels, 256, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const int64_t o = m / a.pixels, p = m % a.pixels;
      const float* x = a.x + o * a.channels * a.pixels + p;
      uint8_t* out = a.out + m * a.channels;
      for (int64_t c = 0; c < a.channels; ++c) out[c] = quantize_one(x[c * a.pixels], a);
    }
  });
}

}  // namespace ref
}  // namespace pyfastcnn
