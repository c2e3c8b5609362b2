// Sparse INT8 convolution for AVX2, group layout (see SparseInt8ConvArgs in kernels.h): each
// output channel's non-zeros in groups of four arbitrary weights, for unstructured pruning (at
// 90% sparsity 4-channel blocks are 34% full, groups ~100%).
//
// As in the AVX2 block kernel the products are vpmaddwd's on int16 (exact; vpmaddubsw would
// saturate), here over uint16 planes with one plane per input channel: per group and 16
// pixels, the rows of weights 0 and 1 are interleaved with two unpacks so that every dword holds
// one pixel's two activations, then one vpmaddwd with (w0, w1) broadcast; the same for weights 2
// and 3. Four loads, four unpacks, four vpmaddwd per group and 16 pixels: the block kernel's
// work plus the unpacks. The unpacks work within 128-bit lanes (accumulator A holds pixels 0-3
// and 8-11, B 4-7 and 12-15); the sums stay in that order and the store path reads them so
// (SumOrder::lanes16 in sparse_int8_store_avx2.h).
// The planes (or, in window mode, each task's window) are filled by 8 x 8 transposes of uint16.
#include <immintrin.h>

#include <cstring>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/memory.h"
#include "pyfastcnn/parallel.h"
#include "../tile_loop.h"
#include "sparse_int8_store_avx2.h"

namespace pyfastcnn {
namespace avx2 {
namespace {

constexpr int kPixelsPerSet = 32;  // pixels per pass over a channel's groups (4 accumulators)

__m256i load(const uint16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// Channels 0..8 of a pixel as uint16 (bytes ^ flip), or the zero point for a null pixel (the
// image's padding) or one past the `np` pixels. `valid` channels are read (the rest are never
// stored).
inline __m128i pixel_channels(const uint8_t* src, int64_t valid, __m128i flip, __m128i zp) {
  if (!src) return zp;
  int64_t raw = 0;
  if (valid >= 8) {
    std::memcpy(&raw, src, 8);
  } else {  // fixed-size pieces: a variable-length memcpy became a byte loop (a third of a
            // 3-channel stem's time on Zen 1)
    unsigned char* r = reinterpret_cast<unsigned char*>(&raw);
    int64_t at = 0;
    if (valid & 4) std::memcpy(r, src, 4), at = 4;
    if (valid & 2) std::memcpy(r + at, src + at, 2), at += 2;
    if (valid & 1) r[at] = src[at];
  }
  return _mm_cvtepu8_epi16(_mm_xor_si128(_mm_cvtsi64_si128(raw), flip));
}

// The C channels of up to 16 pixels (src[p], null: padding) as uint16 planes: dst[c *
// plane_stride + p] for p < np. Per 8 channels, rows [pixel p | pixel p + 8] are transposed in
// their 128-bit lanes, giving [channel c of pixels 0-7 | of pixels 8-15].
void pixels_to_planes(const uint8_t* const* src, int np, int64_t C, uint8_t flip_byte,
                      uint16_t zero_point, uint16_t* dst, int64_t plane_stride) {
  const __m128i flip = _mm_set1_epi8(static_cast<char>(flip_byte));
  const __m128i zp = _mm_set1_epi16(static_cast<int16_t>(zero_point));
  for (int64_t c0 = 0; c0 < C; c0 += 8) {
    const int64_t valid = C - c0 < 8 ? C - c0 : 8;
    __m256i r[8];
    for (int p = 0; p < 8; ++p) {
      const __m128i lo = p < np ? pixel_channels(src[p] ? src[p] + c0 : nullptr, valid, flip, zp)
                                : zp;
      const __m128i hi = p + 8 < np
                             ? pixel_channels(src[p + 8] ? src[p + 8] + c0 : nullptr, valid, flip, zp)
                             : zp;
      r[p] = _mm256_set_m128i(hi, lo);
    }
    __m256i t[8], u[8];
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_epi16(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_epi16(r[2 * i], r[2 * i + 1]);
    }
    // u[0], u[1]: pixels 0-3 at channels (0, 1), (2, 3); u[2], u[3]: (4, 5), (6, 7); u[4..7]
    // the same for pixels 4-7.
    for (int h = 0; h < 2; ++h) {
      u[4 * h] = _mm256_unpacklo_epi32(t[4 * h], t[4 * h + 2]);
      u[4 * h + 1] = _mm256_unpackhi_epi32(t[4 * h], t[4 * h + 2]);
      u[4 * h + 2] = _mm256_unpacklo_epi32(t[4 * h + 1], t[4 * h + 3]);
      u[4 * h + 3] = _mm256_unpackhi_epi32(t[4 * h + 1], t[4 * h + 3]);
    }
    for (int c = 0; c < valid; ++c) {
      const __m256i row = c % 2 == 0 ? _mm256_unpacklo_epi64(u[c / 2], u[c / 2 + 4])
                                     : _mm256_unpackhi_epi64(u[c / 2], u[c / 2 + 4]);
      uint16_t* d = dst + (c0 + c) * plane_stride;
      if (np == 16) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), row);
      } else {  // a row's last pixels: the next row's belong to another task
        alignas(32) uint16_t tmp[16];
        _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), row);
        std::memcpy(d, tmp, static_cast<size_t>(np) * sizeof(uint16_t));
      }
    }
  }
}

// Planes mode: channel c of the whole input is plane set c (quad_bytes elements apart).
void fill_planes(const SparseInt8ConvArgs& a, uint16_t* planes) {
  const Conv2dGeometry& g = a.g;
  const int64_t sh = g.stride_h, sw = g.stride_w, C = g.C;
  parallel_for(g.N * sh * sw * a.Hq, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r % a.Hq, phase = r / a.Hq % (sh * sw), n = r / a.Hq / (sh * sw);
      const int64_t ph = phase / sw, pw = phase % sw, ih = i * sh + ph - g.pad_top;
      uint16_t* base = planes + n * a.image_bytes + phase * a.plane_pixels + i * a.Wq;
      const bool row_inside = ih >= 0 && ih < g.H;
      const uint8_t* row = a.x + (n * g.H + ih) * g.W * C;
      for (int64_t j = 0; j < a.Wq; j += 16) {
        const int np = static_cast<int>(a.Wq - j < 16 ? a.Wq - j : 16);
        const uint8_t* src[16];
        for (int p = 0; p < np; ++p) {
          const int64_t iw = (j + p) * sw + pw - g.pad_left;
          src[p] = row_inside && iw >= 0 && iw < g.W ? row + iw * C : nullptr;
        }
        pixels_to_planes(src, np, C, a.flip, a.zero_point, base + j, a.quad_bytes);
      }
    }
  });
  std::memset(planes + g.N * a.image_bytes, 0, 128 * sizeof(uint16_t));  // slack
}

// Window mode: pixels [q0, q0 + len) of image n (1x1, unpadded: q = (oh, ow) reads input pixel
// (oh * sh, ow * sw)) into window[c][kSparseInt8WindowLd].
void fill_window(const SparseInt8ConvArgs& a, int64_t n, int64_t q0, int64_t len,
                 uint16_t* window) {
  const Conv2dGeometry& g = a.g;
  for (int64_t p0 = 0; p0 < len; p0 += 16) {
    const int np = static_cast<int>(len - p0 < 16 ? len - p0 : 16);
    const uint8_t* src[16];
    for (int p = 0; p < np; ++p) {
      const int64_t q = q0 + p0 + p, oh = q / g.OW, ow = q % g.OW;
      src[p] = a.x + ((n * g.H + oh * g.stride_h) * g.W + ow * g.stride_w) * g.C;
    }
    pixels_to_planes(src, np, g.C, a.flip, a.zero_point, window + p0, kSparseInt8WindowLd);
  }
}

// One channel's sums over groups [j, end) for the kPixelsPerSet pixels at base (one set):
// dst[0 .. kPixelsPerSet). 32 pixels (4 accumulators): 64 (8 accumulators) was as fast at
// batch 1 and 5-20% slower on the 3x3 layers at batch 8 on Zen 3 (the rows are loaded twice,
// once per unpack, either way: GCC folds them into the unpacks).
void channel_set_sums(const uint16_t* base, const int32_t* offsets, const int32_t* pairs,
                      int64_t j, int64_t end, int32_t* dst) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, b0 = a0, b1 = a0;
  for (; j < end; ++j) {
    const __m256i w01 = _mm256_set1_epi32(pairs[2 * j]), w23 = _mm256_set1_epi32(pairs[2 * j + 1]);
    const int32_t* o = offsets + 4 * j;
    const uint16_t* p0 = base + o[0];
    const uint16_t* p1 = base + o[1];
    const uint16_t* p2 = base + o[2];
    const uint16_t* p3 = base + o[3];
#define PYFASTCNN_GROUP_VECTOR(v, A, B)                                                     \
  {                                                                                         \
    const __m256i x0 = load(p0 + 16 * v), x1 = load(p1 + 16 * v);                           \
    const __m256i x2 = load(p2 + 16 * v), x3 = load(p3 + 16 * v);                           \
    A = _mm256_add_epi32(A, _mm256_add_epi32(_mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), w01), \
                                             _mm256_madd_epi16(_mm256_unpacklo_epi16(x2, x3), w23))); \
    B = _mm256_add_epi32(B, _mm256_add_epi32(_mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), w01), \
                                             _mm256_madd_epi16(_mm256_unpackhi_epi16(x2, x3), w23))); \
  }
    PYFASTCNN_GROUP_VECTOR(0, a0, b0)
    PYFASTCNN_GROUP_VECTOR(1, a1, b1)
#undef PYFASTCNN_GROUP_VECTOR
  }
  // A: pixels 0-3 | 8-11, B: 4-7 | 12-15, stored as they are (SumOrder::lanes16).
  __m256i* d = reinterpret_cast<__m256i*>(dst);
  _mm256_store_si256(d, a0);
  _mm256_store_si256(d + 1, b0);
  _mm256_store_si256(d + 2, a1);
  _mm256_store_si256(d + 3, b1);
}

template <Int8OutKind KIND>
void task(const SparseInt8ConvArgs& a, const uint16_t* planes, const int32_t* offsets,
          const int32_t* pairs, int64_t n,
          int64_t q0, int64_t chunk_begin, int64_t chunk_end) {
  alignas(64) int32_t sums[16][kSparseTile];
  const int64_t left = a.q_count - q0 < a.tile ? a.q_count - q0 : a.tile;
  const uint16_t* image = planes ? planes + n * a.image_bytes + q0 : nullptr;
  if (a.window) {  // this task's pixels, transposed into this thread's window
    uint16_t* window = static_cast<uint16_t*>(scratch(
        ScratchSlot::activations,
        static_cast<size_t>(a.g.C * kSparseInt8WindowLd + 64) * sizeof(uint16_t)));
    fill_window(a, n, q0, left, window);
    image = window;
  }
  const int64_t OC = a.g.OC, ocg = a.g.OC / a.g.groups;
  const int sets = static_cast<int>((left + kPixelsPerSet - 1) / kPixelsPerSet);
  for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
    const int64_t oc0 = chunk * 16;
    const int count = static_cast<int>(OC - oc0 < 16 ? OC - oc0 : 16);
    // Sets outer: one set's rows of the planes stay in L1 for the chunk's channels (10% faster
    // on the 256-256-14 layer at batch 8 on Zen 3, 5% slower on 64-64-56).
    for (int s = 0; s < sets; ++s) {
      for (int i = 0; i < count; ++i) {
        const int64_t oc = oc0 + i;
        const uint16_t* base = image + (oc / ocg) * a.group_bytes;
        channel_set_sums(base + kPixelsPerSet * s, offsets, pairs, a.row_ptr[oc],
                         a.row_ptr[oc + 1], sums[i] + kPixelsPerSet * s);
      }
    }
    store_chunk<KIND>(a, sums, count, oc0, n, q0, left, SumOrder::lanes16);
  }
}

template <Int8OutKind KIND>
void run(const SparseInt8ConvArgs& a) {
  uint16_t* planes = nullptr;
  if (!a.window) {
    planes = static_cast<uint16_t*>(scratch(
        ScratchSlot::widened, static_cast<size_t>(a.g.N * a.image_bytes + 128) * sizeof(uint16_t)));
    fill_planes(a, planes);
  }
  const AlignedBuffer offsets = resolved_offsets(a, 4 * a.row_ptr[a.g.OC]);  // 4 per group
  // Each group's weights as two int16 pairs (w0, w1), (w2, w3): one broadcast each in the loop.
  const int64_t pair_count = 2 * a.row_ptr[a.g.OC];
  AlignedBuffer pair_buffer(static_cast<size_t>(pair_count > 0 ? pair_count : 1) * sizeof(int32_t));
  int32_t* pairs = static_cast<int32_t*>(pair_buffer.data());
  for (int64_t j = 0; j < pair_count; ++j) {
    const int8_t* w = reinterpret_cast<const int8_t*>(a.values32) + 2 * j;
    const uint32_t w0 = static_cast<uint16_t>(int16_t{w[0]});
    const uint32_t w1 = static_cast<uint16_t>(int16_t{w[1]});
    pairs[j] = static_cast<int32_t>(w0 | (w1 << 16));
  }
  const int64_t chunks = (a.g.OC + 15) / 16;
  for_each_pixel_tile(a.g.N, a.q_count, a.tile, chunks,
                      [&](int64_t n, int64_t q0, int64_t chunk_begin, int64_t chunk_end) {
                        task<KIND>(a, planes, static_cast<const int32_t*>(offsets.data()),
                                   pairs, n, q0, chunk_begin, chunk_end);
                      },
                      a.window ? 2 : 8);  // output-channel chunks fill the window again
}

}  // namespace

void sparse_int8_group_conv(const SparseInt8ConvArgs& args) {
  with_out_kind(args.epi.kind, [&](auto kind) {
    using K = decltype(kind);
    run<K::value>(args);
  });
}

}  // namespace avx2
}  // namespace pyfastcnn
