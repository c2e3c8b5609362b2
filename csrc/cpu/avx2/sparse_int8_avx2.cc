// Sparse INT8 convolution for AVX2 (see SparseInt8ConvArgs in kernels.h; the layout choice is
// explained in avx512/sparse_int8_avx512vnni.cc). Without VNNI, pmaddubsw would saturate at
// int16 on full-range bytes (255 * 127 * 2 > 32767), so the products are vpmaddwd's on int16:
// the planes are widened to uint16 once per call (widening in the inner loop cost three
// shuffles per load: the kernel ran at half the dense kernel's rate; 1x1 convs widen each
// task's pixels into a window instead, see window_task), so that one 32-byte load
// is 4 pixels x 4 channels, and a block's 4 weights are sign-extended and repeated. Each
// vpmaddwd gives two int32 pair sums per pixel (added at the end); a channel's 16-pixel vector
// takes four accumulators, two vectors (32 pixels) are done per pass over its blocks. The
// int32 sums of 16 channels are transposed to pixels and go through the vector epilogue
// (sparse_int8_store_avx2.h).
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

// Pixels 0..3 (lo) and 4..7 (hi) of 8, each as two int32 pair sums -> 8 pixel sums in order.
__m256i combine(__m256i lo, __m256i hi) {
  return _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo, hi), 0xD8);
}

__m256i load(const uint16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// dst[0 .. 16 * VECTORS) = one channel's sums over its blocks (VECTORS = 1 or 2), the planes
// of 16-pixel vector v at base + 64 * v.
template <int VECTORS>
void channel_sums(const uint16_t* base, const int32_t* offsets, const int32_t* values32,
                  int64_t count, int32_t* dst) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0,
          b3 = a0;
  for (int64_t j = 0; j < count; ++j) {
    const uint16_t* p = base + offsets[j];
    const __m256i w = _mm256_cvtepi8_epi16(_mm_set1_epi32(values32[j]));
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(load(p), w));
    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(load(p + 16), w));
    a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(load(p + 32), w));
    a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(load(p + 48), w));
    if constexpr (VECTORS == 2) {
      b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(load(p + 64), w));
      b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(load(p + 80), w));
      b2 = _mm256_add_epi32(b2, _mm256_madd_epi16(load(p + 96), w));
      b3 = _mm256_add_epi32(b3, _mm256_madd_epi16(load(p + 112), w));
    }
  }
  __m256i* d = reinterpret_cast<__m256i*>(dst);
  _mm256_store_si256(d, combine(a0, a1));
  _mm256_store_si256(d + 1, combine(a2, a3));
  if constexpr (VECTORS == 2) {
    _mm256_store_si256(d + 2, combine(b0, b1));
    _mm256_store_si256(d + 3, combine(b2, b3));
  }
}

// The sums of a tile's pixels q0 .. q0 + left for the output-channel chunks [chunk_begin,
// chunk_end), from `image` (the tile's first pixel in the image's planes, or in a task's
// window), written through the store path.
template <Int8OutKind KIND>
void sum_chunks(const SparseInt8ConvArgs& a, const uint16_t* image, const int32_t* offsets,
                int64_t n, int64_t q0, int64_t left, int64_t chunk_begin, int64_t chunk_end) {
  alignas(64) int32_t sums[16][kSparseTile];
  const int vectors = static_cast<int>((left + 15) / 16);
  const int64_t OC = a.g.OC, ocg = a.g.OC / a.g.groups;
  for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
    const int64_t oc0 = chunk * 16;
    const int count = static_cast<int>(OC - oc0 < 16 ? OC - oc0 : 16);
    for (int i = 0; i < count; ++i) {
      const int64_t oc = oc0 + i, begin = a.row_ptr[oc], blocks = a.row_ptr[oc + 1] - begin;
      const uint16_t* base = image + (oc / ocg) * a.group_bytes;
      for (int v = 0; v < vectors; v += 2) {
        if (v + 1 < vectors) {
          channel_sums<2>(base + 64 * v, offsets + begin, a.values32 + begin, blocks,
                          sums[i] + 16 * v);
        } else {
          channel_sums<1>(base + 64 * v, offsets + begin, a.values32 + begin, blocks,
                          sums[i] + 16 * v);
        }
      }
    }
    store_chunk<KIND>(a, sums, count, oc0, n, q0, left);
  }
}

template <Int8OutKind KIND>
void task(const SparseInt8ConvArgs& a, const uint16_t* planes, const int32_t* offsets, int64_t n,
          int64_t q0, int64_t chunk_begin, int64_t chunk_end) {
  const int64_t left = a.q_count - q0 < a.tile ? a.q_count - q0 : a.tile;
  sum_chunks<KIND>(a, planes + n * a.image_bytes + 4 * q0, offsets, n, q0, left, chunk_begin,
                   chunk_end);
}

// The planes of SparseInt8ConvArgs widened to uint16: what ref::sparse_int8_fill_planes writes
// (bytes ^ flip, zero point around the image), one element per byte, straight from x (the
// scalar fill into bytes plus a widening pass cost twice the sparse products of a 90%-sparse
// 1x1 layer). Quads of 4 channels inside the image go 4 pixels at a time.
void fill_planes16(const SparseInt8ConvArgs& a, uint16_t* planes) {
  const Conv2dGeometry& g = a.g;
  const int64_t sh = g.stride_h, sw = g.stride_w, cg = g.C / g.groups, cq = (cg + 3) / 4;
  const uint8_t flip = a.flip;
  const uint16_t zp = a.zero_point;
  const __m128i flip16 = _mm_set1_epi8(static_cast<char>(flip));
  // Columns [j0, j1) of a plane row read the image (iw = j * sw + pw - pad_left in [0, W)).
  const auto columns = [&](int64_t pw, int64_t* j0, int64_t* j1) {
    const int64_t lo = g.pad_left - pw, hi = g.W + g.pad_left - pw;  // j * sw in [lo, hi)
    const int64_t first = lo <= 0 ? 0 : (lo + sw - 1) / sw, last = hi <= 0 ? 0 : (hi + sw - 1) / sw;
    *j0 = first < a.Wq ? first : a.Wq;
    *j1 = last < a.Wq ? last : a.Wq;
    if (*j1 < *j0) *j1 = *j0;
  };
  parallel_for(g.N * sh * sw * a.Hq, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r % a.Hq, phase = r / a.Hq % (sh * sw), n = r / a.Hq / (sh * sw);
      const int64_t ph = phase / sw, pw = phase % sw, ih = i * sh + ph - g.pad_top;
      uint16_t* base = planes + n * a.image_bytes + phase * a.plane_pixels * 4 + i * a.Wq * 4;
      int64_t j0 = 0, j1 = 0;
      if (ih >= 0 && ih < g.H) columns(pw, &j0, &j1);
      const int64_t step = sw * g.C;  // bytes between the pixels of consecutive columns
      for (int64_t gq = 0; gq < g.groups * cq; ++gq) {
        uint16_t* out = base + (gq / cq) * a.group_bytes + (gq % cq) * a.quad_bytes;
        const int64_t c0 = (gq / cq) * cg + (gq % cq) * 4;
        const int64_t valid = (gq / cq + 1) * cg - c0 < 4 ? (gq / cq + 1) * cg - c0 : 4;
        for (int64_t i = 0; i < 4 * j0; ++i) out[i] = zp;
        for (int64_t i = 4 * j1; i < 4 * a.Wq; ++i) out[i] = zp;
        if (j1 <= j0) continue;
        const uint8_t* in = a.x + ((n * g.H + ih) * g.W + j0 * sw + pw - g.pad_left) * g.C + c0;
        int64_t j = j0;
        if (valid == 4) {
          for (; j + 4 <= j1; j += 4, in += 4 * step) {
            int32_t v[4];
            for (int k = 0; k < 4; ++k) std::memcpy(&v[k], in + k * step, 4);
            const __m128i bytes = _mm_xor_si128(_mm_setr_epi32(v[0], v[1], v[2], v[3]), flip16);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 4 * j),
                                _mm256_cvtepu8_epi16(bytes));
          }
        }
        for (; j < j1; ++j, in += step) {
          for (int64_t c = 0; c < 4; ++c) {
            out[4 * j + c] = c < valid ? static_cast<uint16_t>(in[c] ^ flip) : zp;
          }
        }
      }
    }
  });
  // Slack read by the last vectors (zero, as the byte planes' slack).
  std::memset(planes + g.N * a.image_bytes, 0, 128 * sizeof(uint16_t));
}

// ---- window mode: 1x1 convs without padding (groups 1; SparseInt8ConvArgs::window) -----------
// The widened planes of a whole input are a round trip through memory (written, then read back
// by every tile) and, at 90% sparsity, cost more than the products. A 1x1 conv needs no planes:
// each task transposes its own pixels' channels into a per-thread window [quad][pixel][4] of
// uint16 (kWindowLd pixels per quad row) that stays in cache while its channels are summed.
// k_offset[quad] = quad * 4 * kWindowLd: bytes of the op's byte window, elements of this one.
constexpr int64_t kWindowLd = kSparseInt8WindowLd;
static_assert(kWindowLd >= kSparseTile, "a task's pixels fit one window row");

// 8 pixels' 32 bytes (rows r[p]: quads 0-3 | quads 4-7) as 4-byte units transposed within the
// 128-bit lanes: u[i] = [quad i of pixels 0-3 | quad 4 + i of pixels 0-3], u[4 + i] the same
// for pixels 4-7. No lane-crossing shuffle (vperm2i128 is 8 micro-ops on Zen 1).
inline void transpose_quads(const __m256i r[8], __m256i u[8]) {
  for (int h = 0; h < 8; h += 4) {
    const __m256i t0 = _mm256_unpacklo_epi32(r[h], r[h + 1]);
    const __m256i t1 = _mm256_unpackhi_epi32(r[h], r[h + 1]);
    const __m256i t2 = _mm256_unpacklo_epi32(r[h + 2], r[h + 3]);
    const __m256i t3 = _mm256_unpackhi_epi32(r[h + 2], r[h + 3]);
    u[h] = _mm256_unpacklo_epi64(t0, t2);
    u[h + 1] = _mm256_unpackhi_epi64(t0, t2);
    u[h + 2] = _mm256_unpacklo_epi64(t1, t3);
    u[h + 3] = _mm256_unpackhi_epi64(t1, t3);
  }
}

// The channels of pixels q0 .. q0 + len of image n (virtual pixel q = (oh, ow) reads input pixel
// (oh * sh, ow * sw)) into window[(c / 4) * 4 * kWindowLd + 4 * p + c % 4] as uint16 (bytes ^ flip;
// channels past C of the last quad: the zero point, their weights are zero), and copies of the
// last pixel up to `padded` (whole vectors). 8 pixels x 8 quads per transpose; the channels
// past the last whole 32 go one pixel at a time.
void fill_window(const SparseInt8ConvArgs& a, int64_t n, int64_t q0, int64_t len,
                 int64_t padded, uint16_t* window) {
  const Conv2dGeometry& g = a.g;
  const int64_t C = g.C, cq = (C + 3) / 4, whole = C / 32 * 32;
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(a.flip));
  const uint8_t* src[8];
  for (int64_t p0 = 0; p0 < padded; p0 += 8) {
    for (int p = 0; p < 8; ++p) {
      const int64_t q = q0 + (p0 + p < len ? p0 + p : len - 1), oh = q / g.OW, ow = q % g.OW;
      src[p] = a.x + ((n * g.H + oh * g.stride_h) * g.W + ow * g.stride_w) * C;
    }
    uint16_t* dst = window + 4 * p0;
    for (int64_t c0 = 0; c0 < whole; c0 += 32) {
      __m256i r[8], u[8];
      for (int p = 0; p < 8; ++p) {
        r[p] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src[p] + c0));
        if (a.flip) r[p] = _mm256_xor_si256(r[p], flip);
      }
      transpose_quads(r, u);
      for (int i = 0; i < 8; ++i) {  // u[i]: pixels 0-3 (i < 4) or 4-7, quads i % 4 and 4 + i % 4
        uint16_t* d = dst + (c0 / 4 + i % 4) * 4 * kWindowLd + (i < 4 ? 0 : 16);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d),
                            _mm256_cvtepu8_epi16(_mm256_castsi256_si128(u[i])));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + 16 * kWindowLd),
                            _mm256_cvtepu8_epi16(_mm256_extracti128_si256(u[i], 1)));
      }
    }
    for (int64_t c = whole; c < cq * 4; ++c) {
      uint16_t* d = dst + (c / 4) * 4 * kWindowLd + c % 4;
      for (int p = 0; p < 8; ++p) {
        d[4 * p] = c < C ? static_cast<uint16_t>(src[p][c] ^ a.flip) : a.zero_point;
      }
    }
  }
}

template <Int8OutKind KIND>
void window_task(const SparseInt8ConvArgs& a, const int32_t* offsets, int64_t n, int64_t q0,
                 int64_t chunk_begin, int64_t chunk_end) {
  const int64_t left = a.q_count - q0 < a.tile ? a.q_count - q0 : a.tile;
  uint16_t* window = static_cast<uint16_t*>(
      scratch(ScratchSlot::activations,
              static_cast<size_t>((a.g.C + 3) / 4 * 4 * kWindowLd + 64) * sizeof(uint16_t)));
  fill_window(a, n, q0, left, (left + 15) / 16 * 16, window);
  sum_chunks<KIND>(a, window, offsets, n, q0, left, chunk_begin, chunk_end);  // groups == 1
}

template <Int8OutKind KIND>
void run(const SparseInt8ConvArgs& args) {
  const AlignedBuffer offsets = resolved_offsets(args, args.row_ptr[args.g.OC]);
  const int32_t* const offs = static_cast<const int32_t*>(offsets.data());
  const int64_t chunks = (args.g.OC + 15) / 16;
  if (args.window) {
    for_each_pixel_tile(args.g.N, args.q_count, args.tile, chunks,
                        [&](int64_t image, int64_t q0, int64_t chunk_begin, int64_t chunk_end) {
                          window_task<KIND>(args, offs, image, q0, chunk_begin, chunk_end);
                        },
                        2);  // output-channel chunks fill the window again
    return;
  }
  uint16_t* planes = static_cast<uint16_t*>(scratch(
      ScratchSlot::widened, static_cast<size_t>(args.g.N * args.image_bytes + 128) * 2));
  fill_planes16(args, planes);
  for_each_pixel_tile(args.g.N, args.q_count, args.tile, chunks,
                      [&](int64_t image, int64_t q0, int64_t chunk_begin, int64_t chunk_end) {
                        task<KIND>(args, planes, offs, image, q0, chunk_begin, chunk_end);
                      });
}

}  // namespace

void sparse_int8_conv(const SparseInt8ConvArgs& args) {
  with_out_kind(args.epi.kind, [&](auto kind) {
    using K = decltype(kind);
    run<K::value>(args);
  });
}

}  // namespace avx2
}  // namespace pyfastcnn
