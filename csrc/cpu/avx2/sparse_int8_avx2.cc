// Sparse INT8 convolution for AVX2 (see SparseInt8ConvArgs in kernels.h; the layout choice is
// explained in avx512/sparse_int8_avx512vnni.cc). Without VNNI, pmaddubsw would saturate at
// int16 on full-range bytes (255 * 127 * 2 > 32767), so the products are vpmaddwd's on int16:
// the planes are widened to uint16 once per call (widening in the inner loop cost three
// shuffles per load: the kernel ran at half the dense kernel's rate), so that one 32-byte load
// is 4 pixels x 4 channels, and a block's 4 weights are sign-extended and repeated. Each
// vpmaddwd gives two int32 pair sums per pixel (added at the end); a channel's 16-pixel vector
// takes four accumulators, two vectors (32 pixels) are done per pass over its blocks. The
// int32 sums of 16 channels are transposed to pixels and go through the vector epilogue
// (int8_epilogue_avx2.h).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

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

template <Int8OutKind KIND>
void task(const SparseInt8ConvArgs& a, const uint16_t* planes, const int32_t* offsets, int64_t n,
          int64_t q0, int64_t chunk_begin, int64_t chunk_end) {
  alignas(64) int32_t sums[16][kSparseTile];
  const int64_t left = a.q_count - q0 < a.tile ? a.q_count - q0 : a.tile;
  const int vectors = static_cast<int>((left + 15) / 16);
  const uint16_t* image = planes + n * a.image_bytes + 4 * q0;
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
    *j0 = std::min(a.Wq, lo <= 0 ? 0 : (lo + sw - 1) / sw);
    *j1 = std::max(*j0, std::min(a.Wq, hi <= 0 ? 0 : (hi + sw - 1) / sw));
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
        const int64_t valid = std::min<int64_t>(4, (gq / cq + 1) * cg - c0);
        std::fill(out, out + 4 * j0, zp);
        std::fill(out + 4 * j1, out + 4 * a.Wq, zp);
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
  std::fill(planes + g.N * a.image_bytes, planes + g.N * a.image_bytes + 128, uint16_t{0});
}

template <Int8OutKind KIND>
void run(const SparseInt8ConvArgs& args) {
  uint16_t* planes = static_cast<uint16_t*>(scratch(
      ScratchSlot::widened, static_cast<size_t>(args.g.N * args.image_bytes + 128) * 2));
  fill_planes16(args, planes);
  const std::vector<int32_t> offsets = resolved_offsets(args, args.row_ptr[args.g.OC]);
  const int64_t chunks = (args.g.OC + 15) / 16;
  for_each_pixel_tile(args.g.N, args.q_count, args.tile, chunks,
                      [&](int64_t image, int64_t q0, int64_t chunk_begin, int64_t chunk_end) {
                        task<KIND>(args, planes, offsets.data(), image, q0, chunk_begin,
                                   chunk_end);
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
