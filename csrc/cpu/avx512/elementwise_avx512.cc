// AVX-512 INT8 elementwise ops (quantized add, per-tensor quantize with the NCHW -> NHWC
// transpose fused). Memory-bound: one pass, 16 lanes of float32 per vector, masked tails.
// Compiled with -ffp-contract=off so mul + add stay two roundings, as kernels.h and the scalar
// reference define them.
#include <immintrin.h>

#include <cstdint>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace avx512 {
namespace {

constexpr int64_t kChunk = 16384;  // elements per parallel task
constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

__mmask16 mask16(int64_t valid) {
  return valid >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1);
}

template <bool SIGNED>
__m512 load_codes(const uint8_t* p, __mmask16 m) {
  const __m128i v = _mm_maskz_loadu_epi8(m, p);
  return _mm512_cvtepi32_ps(SIGNED ? _mm512_cvtepi8_epi32(v) : _mm512_cvtepu8_epi32(v));
}

struct AddConsts {
  __m512 ka, kb, c, lo, hi;
};

template <bool SIGNED>
__m128i add16(const uint8_t* a, const uint8_t* b, __mmask16 m, const AddConsts& k) {
  const __m512 t = _mm512_add_ps(_mm512_mul_ps(load_codes<SIGNED>(a, m), k.ka), k.c);
  __m512 y = _mm512_add_ps(t, _mm512_mul_ps(load_codes<SIGNED>(b, m), k.kb));
  y = _mm512_min_ps(_mm512_max_ps(y, k.lo), k.hi);
  return _mm512_cvtepi32_epi8(_mm512_cvt_roundps_epi32(y, kRound));
}

template <bool SIGNED>
void add_range(const QuantAddArgs& a, int64_t i, int64_t stop) {
  const AddConsts k{_mm512_set1_ps(a.ka), _mm512_set1_ps(a.kb), _mm512_set1_ps(a.c),
                    _mm512_set1_ps(a.lo), _mm512_set1_ps(a.hi)};
  const __mmask16 all = 0xFFFF;
  for (; i + 64 <= stop; i += 64) {
    const __m128i q0 = add16<SIGNED>(a.a + i, a.b + i, all, k);
    const __m128i q1 = add16<SIGNED>(a.a + i + 16, a.b + i + 16, all, k);
    const __m128i q2 = add16<SIGNED>(a.a + i + 32, a.b + i + 32, all, k);
    const __m128i q3 = add16<SIGNED>(a.a + i + 48, a.b + i + 48, all, k);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out + i), q0);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out + i + 16), q1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out + i + 32), q2);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out + i + 48), q3);
  }
  for (; i < stop; i += 16) {
    const __mmask16 m = mask16(stop - i);
    _mm_mask_storeu_epi8(a.out + i, m, add16<SIGNED>(a.a + i, a.b + i, m, k));
  }
}

struct QuantConsts {
  __m512 scale, lo, hi;
  __m512i zero_point;
};

// 16 codes (as int32 lanes' low bytes, packed to 16 bytes) of 16 floats at x (lanes m).
__m128i quantize16(const float* x, __mmask16 m, const QuantConsts& k) {
  __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x), k.scale);
  v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);  // NaN -> 0
  v = _mm512_min_ps(_mm512_max_ps(v, k.lo), k.hi);
  return _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvt_roundps_epi32(v, kRound), k.zero_point));
}

void quantize_flat(const QuantizeArgs& a, const QuantConsts& k, int64_t i, int64_t stop) {
  for (; i + 64 <= stop; i += 64) {
    const __m128i q0 = quantize16(a.x + i, 0xFFFF, k);
    const __m128i q1 = quantize16(a.x + i + 16, 0xFFFF, k);
    const __m128i q2 = quantize16(a.x + i + 32, 0xFFFF, k);
    const __m128i q3 = quantize16(a.x + i + 48, 0xFFFF, k);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out + i), q0);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out + i + 16), q1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out + i + 32), q2);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out + i + 48), q3);
  }
  for (; i < stop; i += 16) {
    const __mmask16 m = mask16(stop - i);
    _mm_mask_storeu_epi8(a.out + i, m, quantize16(a.x + i, m, k));
  }
}

__mmask16 byte_mask(int64_t bytes) { return mask16(bytes < 0 ? 0 : bytes); }

// 3 channels: 16 pixels' codes per channel interleaved into 48 bytes with byte shuffles.
void quantize_rgb(const QuantizeArgs& a, const QuantConsts& k, int64_t o, int64_t p0, int64_t p1) {
  alignas(16) int8_t idx[3][3][16];  // [output vector][channel][byte]
  for (int v = 0; v < 3; ++v) {
    for (int c = 0; c < 3; ++c) {
      for (int j = 0; j < 16; ++j) {
        const int byte = 16 * v + j;
        idx[v][c][j] = byte % 3 == c ? static_cast<int8_t>(byte / 3) : static_cast<int8_t>(-128);
      }
    }
  }
  __m128i sh[3][3];
  for (int v = 0; v < 3; ++v) {
    for (int c = 0; c < 3; ++c) sh[v][c] = _mm_load_si128(reinterpret_cast<const __m128i*>(idx[v][c]));
  }
  const float* x = a.x + o * 3 * a.pixels;
  uint8_t* out = a.out + o * 3 * a.pixels;
  for (int64_t p = p0; p < p1; p += 16) {
    const __mmask16 m = mask16(p1 - p);
    const __m128i r = quantize16(x + p, m, k);
    const __m128i g = quantize16(x + a.pixels + p, m, k);
    const __m128i b = quantize16(x + 2 * a.pixels + p, m, k);
    __m128i o3[3];
    for (int v = 0; v < 3; ++v) {
      o3[v] = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(r, sh[v][0]), _mm_shuffle_epi8(g, sh[v][1])),
                           _mm_shuffle_epi8(b, sh[v][2]));
    }
    uint8_t* dst = out + 3 * p;
    if (p + 16 <= p1) {
      for (int v = 0; v < 3; ++v) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16 * v), o3[v]);
    } else {
      const int64_t bytes = 3 * (p1 - p);
      for (int v = 0; v < 3; ++v) _mm_mask_storeu_epi8(dst + 16 * v, byte_mask(bytes - 16 * v), o3[v]);
    }
  }
}

// Any channel count: 16 pixels x up to 64 channels through a small transposing buffer.
void quantize_transpose(const QuantizeArgs& a, const QuantConsts& k, int64_t o, int64_t p0,
                        int64_t p1) {
  const int64_t C = a.channels, P = a.pixels;
  alignas(64) uint8_t tmp[64 * 16];
  for (int64_t p = p0; p < p1; p += 16) {
    const int64_t np = p1 - p < 16 ? p1 - p : 16;
    const __mmask16 m = mask16(np);
    for (int64_t c0 = 0; c0 < C; c0 += 64) {
      const int64_t nc = C - c0 < 64 ? C - c0 : 64;
      for (int64_t c = 0; c < nc; ++c) {
        _mm_store_si128(reinterpret_cast<__m128i*>(tmp + 16 * c),
                        quantize16(a.x + (o * C + c0 + c) * P + p, m, k));
      }
      uint8_t* dst = a.out + (o * P + p) * C + c0;
      for (int64_t j = 0; j < np; ++j) {
        for (int64_t c = 0; c < nc; ++c) dst[j * C + c] = tmp[16 * c + j];
      }
    }
  }
}

}  // namespace

void quantized_add(const QuantAddArgs& args) {
  const QuantAddArgs a = args;
  parallel_for((a.n + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
    const int64_t stop = end * kChunk < a.n ? end * kChunk : a.n;
    if (a.is_signed) {
      add_range<true>(a, begin * kChunk, stop);
    } else {
      add_range<false>(a, begin * kChunk, stop);
    }
  });
}

void quantize(const QuantizeArgs& args) {
  const QuantizeArgs a = args;
  const QuantConsts k{_mm512_set1_ps(a.scale), _mm512_set1_ps(a.lo), _mm512_set1_ps(a.hi),
                      _mm512_set1_epi32(a.zero_point)};
  if (!a.transpose) {
    const int64_t n = a.outer * a.channels * a.pixels;
    parallel_for((n + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
      quantize_flat(a, k, begin * kChunk, end * kChunk < n ? end * kChunk : n);
    });
    return;
  }
  // Tasks: blocks of pixels (a multiple of 16) of one image, about kChunk elements each.
  int64_t block = (kChunk / (a.channels > 0 ? a.channels : 1) + 15) / 16 * 16;
  if (block < 16) block = 16;
  const int64_t blocks = (a.pixels + block - 1) / block;
  parallel_for(a.outer * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t o = t / blocks, p0 = t % blocks * block;
      const int64_t p1 = p0 + block < a.pixels ? p0 + block : a.pixels;
      if (a.channels == 3) {
        quantize_rgb(a, k, o, p0, p1);
      } else {
        quantize_transpose(a, k, o, p0, p1);
      }
    }
  });
}

}  // namespace avx512
}  // namespace pyfastcnn
