// INT8 depthwise conv on AVX2 (see Int8DepthwiseArgs): the AVX-512 kernel's scheme on 8 lanes
// (int32 lanes times the weight's (w, 0) int16 pair with vpmaddwd), a task being one
// output row times up to 32 channels; the epilogue is the vector one of int8_epilogue_avx2.h
// (the scalar reference epilogue took ~70% of the time: depthwise convs do little per output).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"
#include "int8_epilogue_avx2.h"

namespace pyfastcnn {
namespace avx2 {
namespace {

constexpr int64_t kChunk = 32;

template <bool SIGNED>
inline __m256i widen(const uint8_t* p) {
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return SIGNED ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes);
}

// Output row `row`, channels c0 .. c0 + 8 * NB; `tail` of the last vector's lanes are past C
// (read from a copy: AVX2 has no masked byte loads).
template <bool SIGNED, int NB, Int8OutKind KIND>
void depthwise_row(const Int8DepthwiseArgs& a, int64_t row, int64_t c0) {
  const int64_t C = a.C, n = row / a.OH, oh = row % a.OH, count = C - c0 < 8 * NB ? C - c0 : 8 * NB;
  const bool partial = count < 8 * NB;
  const int64_t out_size = out_bytes(KIND);
  ChannelOperands8 ops[NB + 1];
  for (int b = 0; b <= NB; ++b) ops[b] = channel_operands<KIND>(a.epi, c0 + 8 * b, count - 8 * b);
  uint8_t zp_bytes[8 * NB], tail[8 * NB];
  std::memset(zp_bytes, a.zero_point, sizeof zp_bytes);
  std::memset(tail, a.zero_point, sizeof tail);
  const uint8_t* image = a.x + n * a.H * a.W * C + c0;
  const int64_t ih0 = oh * a.stride_h - a.pad_top;
  for (int64_t ow = 0; ow < a.OW; ++ow) {
    const int64_t iw0 = ow * a.stride_w - a.pad_left;
    __m256i acc[NB];
    for (int b = 0; b < NB; ++b) acc[b] = _mm256_setzero_si256();
    const int32_t* w = a.weight + c0;
    for (int64_t kh = 0; kh < a.KH; ++kh) {
      const int64_t ih = ih0 + kh * a.dil_h;
      const bool row_inside = ih >= 0 && ih < a.H;
      const uint8_t* in_row = row_inside ? image + ih * a.W * C : nullptr;
      for (int64_t kw = 0; kw < a.KW; ++kw, w += a.Cp) {
        const int64_t iw = iw0 + kw * a.dil_w;
        // Taps outside the image read the zero point (the correction in col_offset cancels it).
        const uint8_t* p = row_inside && iw >= 0 && iw < a.W ? in_row + iw * C : zp_bytes;
        if (partial && p != zp_bytes) {
          std::memcpy(tail, p, count);
          p = tail;
        }
        for (int b = 0; b < NB; ++b) {
          const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 8 * b));
          acc[b] = _mm256_add_epi32(acc[b], _mm256_madd_epi16(widen<SIGNED>(p + 8 * b), wv));
        }
      }
    }
    const int64_t m = row * a.OW + ow;
    char* out_row = static_cast<char*>(a.out) + m * C * out_size;
    const uint8_t* res = a.epi.residual ? a.epi.residual + m * a.epi.residual_ld : nullptr;
    for (int b = 0; b < NB; b += 2) {
      const __m256i hi = b + 1 < NB ? _mm256_add_epi32(acc[b + 1], ops[b + 1].offset)
                                    : _mm256_setzero_si256();
      store_row16<KIND>(_mm256_add_epi32(acc[b], ops[b].offset), hi, ops[b], ops[b + 1], a.epi,
                        out_row, c0 + 8 * b, static_cast<int>(count - 8 * b), res);
    }
  }
}

template <bool SIGNED, Int8OutKind KIND>
void depthwise(const Int8DepthwiseArgs& a) {
  const int64_t chunks = (a.C + kChunk - 1) / kChunk;
  parallel_for(a.N * a.OH * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t row = t / chunks, c0 = t % chunks * kChunk;
      switch ((a.C - c0 + 7) / 8) {
        case 1: depthwise_row<SIGNED, 1, KIND>(a, row, c0); break;
        case 2: depthwise_row<SIGNED, 2, KIND>(a, row, c0); break;
        case 3: depthwise_row<SIGNED, 3, KIND>(a, row, c0); break;
        default: depthwise_row<SIGNED, 4, KIND>(a, row, c0); break;
      }
    }
  });
}

}  // namespace

void int8_depthwise(const Int8DepthwiseArgs& a) {
  with_out_kind(a.epi.kind, [&](auto kind) {
    using K = decltype(kind);
    if (a.x_signed) {
      depthwise<true, K::value>(a);
    } else {
      depthwise<false, K::value>(a);
    }
  });
}

}  // namespace avx2
}  // namespace pyfastcnn
