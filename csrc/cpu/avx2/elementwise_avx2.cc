// AVX2 INT8 elementwise ops: the AVX-512 kernels' math on 8-lane vectors; tails go through a
// small stack buffer (no masked byte loads before AVX-512). Compiled with -ffp-contract=off.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace avx2 {
namespace {

constexpr int64_t kChunk = 16384;  // elements per parallel task
constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

// 16 int32 lanes (low, high) holding codes -> 16 bytes; lanes are already in the code range.
template <bool SIGNED>
__m128i pack16(__m256i lo, __m256i hi) {
  const __m256i w = _mm256_packs_epi32(lo, hi);  // int16, 128-bit lanes interleaved
  const __m128i w0 = _mm256_castsi256_si128(w), w1 = _mm256_extracti128_si256(w, 1);
  // w0 = lo[0..3] hi[0..3], w1 = lo[4..7] hi[4..7]
  const __m128i b = SIGNED ? _mm_packs_epi16(w0, w1) : _mm_packus_epi16(w0, w1);
  // bytes: lo0-3 hi0-3 lo4-7 hi4-7 -> lo0-7 hi0-7
  return _mm_shuffle_epi32(b, _MM_SHUFFLE(3, 1, 2, 0));
}

template <bool SIGNED>
__m256 load8(const uint8_t* p) {
  const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(SIGNED ? _mm256_cvtepi8_epi32(v) : _mm256_cvtepu8_epi32(v));
}

struct AddConsts {
  __m256 ka, kb, c, lo, hi;
};

template <bool SIGNED>
__m256i add8(const uint8_t* a, const uint8_t* b, const AddConsts& k) {
  const __m256 t = _mm256_add_ps(_mm256_mul_ps(load8<SIGNED>(a), k.ka), k.c);
  __m256 y = _mm256_add_ps(t, _mm256_mul_ps(load8<SIGNED>(b), k.kb));
  y = _mm256_min_ps(_mm256_max_ps(y, k.lo), k.hi);
  return _mm256_cvttps_epi32(_mm256_round_ps(y, kRound));
}

template <bool SIGNED>
void add_range(const QuantAddArgs& a, int64_t i, int64_t stop) {
  const AddConsts k{_mm256_set1_ps(a.ka), _mm256_set1_ps(a.kb), _mm256_set1_ps(a.c),
                    _mm256_set1_ps(a.lo), _mm256_set1_ps(a.hi)};
  for (; i + 16 <= stop; i += 16) {
    const __m128i q = pack16<SIGNED>(add8<SIGNED>(a.a + i, a.b + i, k),
                                     add8<SIGNED>(a.a + i + 8, a.b + i + 8, k));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out + i), q);
  }
  if (i < stop) {
    alignas(16) uint8_t ta[16] = {}, tb[16] = {}, to[16];
    const size_t rest = static_cast<size_t>(stop - i);
    std::memcpy(ta, a.a + i, rest);
    std::memcpy(tb, a.b + i, rest);
    _mm_store_si128(reinterpret_cast<__m128i*>(to),
                    pack16<SIGNED>(add8<SIGNED>(ta, tb, k), add8<SIGNED>(ta + 8, tb + 8, k)));
    std::memcpy(a.out + i, to, rest);
  }
}

struct QuantConsts {
  __m256 scale, lo, hi;
  __m256i zero_point;
};

__m256i quantize8(const float* x, const QuantConsts& k) {
  __m256 v = _mm256_div_ps(_mm256_loadu_ps(x), k.scale);
  v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));  // NaN -> 0
  v = _mm256_min_ps(_mm256_max_ps(v, k.lo), k.hi);
  return _mm256_add_epi32(_mm256_cvttps_epi32(_mm256_round_ps(v, kRound)), k.zero_point);
}

// Codes of 16 floats at x, or of the first `n` < 16 (the other bytes are junk).
template <bool SIGNED>
__m128i codes16(const float* x, int64_t n, const QuantConsts& k) {
  if (n >= 16) return pack16<SIGNED>(quantize8(x, k), quantize8(x + 8, k));
  alignas(32) float t[16] = {};
  std::memcpy(t, x, static_cast<size_t>(n) * sizeof(float));
  return pack16<SIGNED>(quantize8(t, k), quantize8(t + 8, k));
}

void store_bytes(uint8_t* dst, __m128i v, int64_t n) {
  if (n >= 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), v);
  } else if (n > 0) {
    alignas(16) uint8_t t[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(t), v);
    std::memcpy(dst, t, static_cast<size_t>(n));
  }
}

template <bool SIGNED>
void quantize_flat(const QuantizeArgs& a, const QuantConsts& k, int64_t i, int64_t stop) {
  for (; i < stop; i += 16) store_bytes(a.out + i, codes16<SIGNED>(a.x + i, stop - i, k), stop - i);
}

template <bool SIGNED>
void quantize_rgb(const QuantizeArgs& a, const QuantConsts& k, int64_t o, int64_t p0, int64_t p1) {
  alignas(16) int8_t idx[3][3][16];
  for (int v = 0; v < 3; ++v) {
    for (int c = 0; c < 3; ++c) {
      for (int j = 0; j < 16; ++j) {
        const int byte = 16 * v + j;
        idx[v][c][j] = byte % 3 == c ? static_cast<int8_t>(byte / 3) : static_cast<int8_t>(-128);
      }
    }
  }
  const float* x = a.x + o * 3 * a.pixels;
  uint8_t* out = a.out + o * 3 * a.pixels;
  for (int64_t p = p0; p < p1; p += 16) {
    const int64_t n = p1 - p;
    const __m128i ch[3] = {codes16<SIGNED>(x + p, n, k), codes16<SIGNED>(x + a.pixels + p, n, k),
                           codes16<SIGNED>(x + 2 * a.pixels + p, n, k)};
    for (int v = 0; v < 3; ++v) {
      __m128i o3 = _mm_setzero_si128();
      for (int c = 0; c < 3; ++c) {
        o3 = _mm_or_si128(o3, _mm_shuffle_epi8(ch[c], _mm_load_si128(
                                                          reinterpret_cast<const __m128i*>(idx[v][c]))));
      }
      store_bytes(out + 3 * p + 16 * v, o3, (n < 16 ? 3 * n : 48) - 16 * v);
    }
  }
}

template <bool SIGNED>
void quantize_transpose(const QuantizeArgs& a, const QuantConsts& k, int64_t o, int64_t p0,
                        int64_t p1) {
  const int64_t C = a.channels, P = a.pixels;
  alignas(16) uint8_t tmp[64 * 16];
  for (int64_t p = p0; p < p1; p += 16) {
    const int64_t np = p1 - p < 16 ? p1 - p : 16;
    for (int64_t c0 = 0; c0 < C; c0 += 64) {
      const int64_t nc = C - c0 < 64 ? C - c0 : 64;
      for (int64_t c = 0; c < nc; ++c) {
        _mm_store_si128(reinterpret_cast<__m128i*>(tmp + 16 * c),
                        codes16<SIGNED>(a.x + (o * C + c0 + c) * P + p, np, k));
      }
      uint8_t* dst = a.out + (o * P + p) * C + c0;
      for (int64_t j = 0; j < np; ++j) {
        for (int64_t c = 0; c < nc; ++c) dst[j * C + c] = tmp[16 * c + j];
      }
    }
  }
}

template <bool SIGNED>
void quantize_impl(const QuantizeArgs& a) {
  const QuantConsts k{_mm256_set1_ps(a.scale), _mm256_set1_ps(a.lo), _mm256_set1_ps(a.hi),
                      _mm256_set1_epi32(a.zero_point)};
  if (!a.transpose) {
    const int64_t n = a.outer * a.channels * a.pixels;
    parallel_for((n + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
      quantize_flat<SIGNED>(a, k, begin * kChunk, end * kChunk < n ? end * kChunk : n);
    });
    return;
  }
  int64_t block = (kChunk / (a.channels > 0 ? a.channels : 1) + 15) / 16 * 16;
  if (block < 16) block = 16;
  const int64_t blocks = (a.pixels + block - 1) / block;
  parallel_for(a.outer * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t o = t / blocks, p0 = t % blocks * block;
      const int64_t p1 = p0 + block < a.pixels ? p0 + block : a.pixels;
      if (a.channels == 3) {
        quantize_rgb<SIGNED>(a, k, o, p0, p1);
      } else {
        quantize_transpose<SIGNED>(a, k, o, p0, p1);
      }
    }
  });
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
  if (args.is_signed) {
    quantize_impl<true>(args);
  } else {
    quantize_impl<false>(args);
  }
}

}  // namespace avx2
}  // namespace pyfastcnn
