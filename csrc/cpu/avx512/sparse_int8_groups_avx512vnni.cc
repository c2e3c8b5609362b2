// Sparse INT8 convolution for AVX-512 VNNI, group layout (see SparseInt8ConvArgs in kernels.h):
// unstructured pruned weights without padding them into 4-channel blocks.
//
// At 90% unstructured sparsity 4-channel blocks hold 34% of the weight slots (1 - 0.9^4), i.e.
// each vpdpbusd of the block kernel does ~1.2 useful products per lane instead of 4. Here each
// output channel's non-zeros go in groups of four arbitrary weights, and the activations come
// from byte planes (one plane per input channel, 64 pixels in 64 bytes): per group and 64
// pixels, the four weights' 64-byte rows are interleaved with 8 byte/word unpacks so that every
// dword holds one pixel's four activations, then 4 vpdpbusd with the group's weights broadcast.
// The unpacks work within 128-bit lanes: accumulator k, dword 4L + j holds pixel 16L + 4k + j,
// put back in pixel order once per channel. Measured here (Zen 4, microbenchmark, data in L1):
// ~3.8 TSC ticks per non-zero per 128 pixels against ~9 for the block kernel on the same
// unstructured weight. For weights pruned in 4-channel blocks the block kernel stays faster
// (one vpdpbusd and one load per 4 non-zeros, no unpacks).
// GCC 12 warns that _mm512_undefined_*() in its own headers is uninitialized (fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <climits>
#include <cstring>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/memory.h"
#include "pyfastcnn/parallel.h"
#include "../tile_loop.h"
#include "sparse_int8_store_avx512vnni.h"

namespace pyfastcnn {
namespace avx512_vnni {
namespace {

constexpr int kPixelsPerSet = 64;                 // one byte-plane row load
constexpr int kMaxSets = kMaxVectors * 16 / kPixelsPerSet;  // tile <= 128 virtual pixels
constexpr int64_t kSliceChannels = 128;

// Keeps v in a register: without it GCC 12 folds the loads into the unpacks that use them,
// loading x1, x2 and x3 twice (11 loads per group instead of 8; loads are the bottleneck).
__attribute__((always_inline)) inline void in_register(__m512i& v) { asm("" : "+v"(v)); }

// One 64-pixel set s of a group: the 4 weights' activation rows p0..p3, interleaved into four
// vectors of (pixel, 4 bytes), accumulated into A, B, C, D.
#define PYFASTCNN_GROUP_SET(s, A, B, C, D)                                                    \
  {                                                                                          \
    __m512i x0 = _mm512_loadu_si512(p0 + kPixelsPerSet * s);                                 \
    __m512i x1 = _mm512_loadu_si512(p1 + kPixelsPerSet * s);                                 \
    __m512i x2 = _mm512_loadu_si512(p2 + kPixelsPerSet * s);                                 \
    __m512i x3 = _mm512_loadu_si512(p3 + kPixelsPerSet * s);                                 \
    in_register(x0), in_register(x1), in_register(x2), in_register(x3);                      \
    const __m512i lo01 = _mm512_unpacklo_epi8(x0, x1), hi01 = _mm512_unpackhi_epi8(x0, x1);  \
    const __m512i lo23 = _mm512_unpacklo_epi8(x2, x3), hi23 = _mm512_unpackhi_epi8(x2, x3);  \
    A = _mm512_dpbusd_epi32(A, _mm512_unpacklo_epi16(lo01, lo23), w);                        \
    B = _mm512_dpbusd_epi32(B, _mm512_unpackhi_epi16(lo01, lo23), w);                        \
    C = _mm512_dpbusd_epi32(C, _mm512_unpacklo_epi16(hi01, hi23), w);                        \
    D = _mm512_dpbusd_epi32(D, _mm512_unpackhi_epi16(hi01, hi23), w);                        \
  }

// Accumulators of one set (dword 4L + j of c_k = pixel 16L + 4k + j) to 64 sums in pixel
// order: vector L of the result is 128-bit lane L of c0, c1, c2, c3 (a 4 x 4 lane transpose).
__attribute__((always_inline)) inline void store_set(__m512i c0, __m512i c1, __m512i c2,
                                                     __m512i c3, int32_t* dst) {
  const __m512i t0 = _mm512_shuffle_i32x4(c0, c1, 0x44), t1 = _mm512_shuffle_i32x4(c2, c3, 0x44);
  const __m512i t2 = _mm512_shuffle_i32x4(c0, c1, 0xEE), t3 = _mm512_shuffle_i32x4(c2, c3, 0xEE);
  _mm512_store_si512(dst, _mm512_shuffle_i32x4(t0, t1, 0x88));
  _mm512_store_si512(dst + 16, _mm512_shuffle_i32x4(t0, t1, 0xDD));
  _mm512_store_si512(dst + 32, _mm512_shuffle_i32x4(t2, t3, 0x88));
  _mm512_store_si512(dst + 48, _mm512_shuffle_i32x4(t2, t3, 0xDD));
}

// One channel's groups j .. end whose first weight index is below k_limit (one slice of input
// channels), added to the accumulators at acc (raw lane order; zero when `first`). Returns the
// first group not done. With `last`, the sums go to dst in pixel order instead.
template <int S>
int64_t channel_group_sums(const uint8_t* base, const int32_t* weight_k, const int32_t* values32,
                           int64_t j, int64_t end, int32_t k_limit, const int32_t* k_offset,
                           int32_t* acc, bool first, bool last, int32_t* dst) {
  __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0,
          c7 = c0;
  if (!first) {
    c0 = _mm512_load_si512(acc), c1 = _mm512_load_si512(acc + 16);
    c2 = _mm512_load_si512(acc + 32), c3 = _mm512_load_si512(acc + 48);
    if constexpr (S > 1) {
      c4 = _mm512_load_si512(acc + 64), c5 = _mm512_load_si512(acc + 80);
      c6 = _mm512_load_si512(acc + 96), c7 = _mm512_load_si512(acc + 112);
    }
  }
  for (; j < end && weight_k[4 * j] < k_limit; ++j) {
    const int32_t* k = weight_k + 4 * j;
    const uint8_t* p0 = base + k_offset[k[0]];
    const uint8_t* p1 = base + k_offset[k[1]];
    const uint8_t* p2 = base + k_offset[k[2]];
    const uint8_t* p3 = base + k_offset[k[3]];
    const __m512i w = _mm512_set1_epi32(values32[j]);
    PYFASTCNN_GROUP_SET(0, c0, c1, c2, c3)
    if constexpr (S > 1) PYFASTCNN_GROUP_SET(1, c4, c5, c6, c7)
  }
  if (last) {
    store_set(c0, c1, c2, c3, dst);
    if constexpr (S > 1) store_set(c4, c5, c6, c7, dst + kPixelsPerSet);
    return j;
  }
  _mm512_store_si512(acc, c0), _mm512_store_si512(acc + 16, c1);
  _mm512_store_si512(acc + 32, c2), _mm512_store_si512(acc + 48, c3);
  if constexpr (S > 1) {
    _mm512_store_si512(acc + 64, c4), _mm512_store_si512(acc + 80, c5);
    _mm512_store_si512(acc + 96, c6), _mm512_store_si512(acc + 112, c7);
  }
  return j;
}
#undef PYFASTCNN_GROUP_SET

// 16 source pixels (pixel p < np at src[p], its C channel bytes contiguous; null sources and
// pixels from np on read as the zero point) to byte planes: channel c's first np bytes at
// dst + c * plane_stride. Per 64
// channels: 16 rows loaded, transposed as 16 x 16 dwords (a vector then holds 16 pixels x 4
// channels), each such vector reordered to 4 channels x 16 pixels and stored as 4 segments.
struct PixelsToPlanes {
  __m512i flip, zp, to_channel_major, lanes_by_channel;
  explicit PixelsToPlanes(const SparseInt8ConvArgs& a)
      : flip(_mm512_set1_epi8(static_cast<char>(a.flip))),
        zp(_mm512_set1_epi8(static_cast<char>(a.zero_point ^ a.flip))),
        // Per 128-bit lane, (pixel, channel) bytes to (channel, pixel); then dword 4L + d
        // (channel d, pixels 4L .. 4L+3) to 4d + L: 128-bit lane d holds channel d's pixels.
        to_channel_major(_mm512_broadcast_i32x4(
            _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15))),
        lanes_by_channel(
            _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)) {}

  void operator()(const uint8_t* const* src, int np, int64_t C, uint8_t* dst,
                  int64_t plane_stride) const {
    const __mmask16 pixel_mask = static_cast<__mmask16>((1u << np) - 1);
    for (int64_t c0 = 0; c0 < C; c0 += 64) {
      const int64_t bytes = C - c0 < 64 ? C - c0 : 64;
      const __mmask64 byte_mask = bytes == 64 ? ~__mmask64{0} : (__mmask64{1} << bytes) - 1;
      __m512i v[16];
      for (int p = 0; p < 16; ++p) {
        v[p] = p < np && src[p] ? _mm512_mask_loadu_epi8(zp, byte_mask, src[p] + c0) : zp;
      }
      transpose16(v);
      for (int qd = 0; 4 * qd < bytes; ++qd) {
        const __m512i x = _mm512_permutexvar_epi32(
            lanes_by_channel,
            _mm512_shuffle_epi8(_mm512_xor_si512(v[qd], flip), to_channel_major));
        uint8_t* d = dst + (c0 + 4 * qd) * plane_stride;
        const int64_t left = bytes - 4 * qd;  // channels of this quad that exist
        _mm_mask_storeu_epi8(d, pixel_mask, _mm512_castsi512_si128(x));
        if (left > 1) {
          _mm_mask_storeu_epi8(d + plane_stride, pixel_mask, _mm512_extracti32x4_epi32(x, 1));
        }
        if (left > 2) {
          _mm_mask_storeu_epi8(d + 2 * plane_stride, pixel_mask,
                               _mm512_extracti32x4_epi32(x, 2));
        }
        if (left > 3) {
          _mm_mask_storeu_epi8(d + 3 * plane_stride, pixel_mask,
                               _mm512_extracti32x4_epi32(x, 3));
        }
      }
    }
  }
};

// Byte planes from NHWC input (channel c of the whole input is plane set c), row by row.
void fill_byte_planes(const SparseInt8ConvArgs& a) {
  const Conv2dGeometry& g = a.g;
  const int64_t sh = g.stride_h, sw = g.stride_w, C = g.C, set_bytes = a.quad_bytes;
  const PixelsToPlanes to_planes(a);
  parallel_for(g.N * sh * sw * a.Hq, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r % a.Hq, phase = r / a.Hq % (sh * sw), n = r / a.Hq / (sh * sw);
      const int64_t ph = phase / sw, pw = phase % sw, ih = i * sh + ph - g.pad_top;
      uint8_t* base = a.planes + n * a.image_bytes + phase * a.plane_pixels + i * a.Wq;
      // Pixel j reads the image where ih and iw = j * sw + pw - pad_left are inside; the rest
      // are zero-point padding (null sources), written by the same transposing stores.
      const bool row_inside = ih >= 0 && ih < g.H;
      const uint8_t* row = a.x + (n * g.H + ih) * g.W * C;
      for (int64_t j = 0; j < a.Wq; j += 16) {
        const int np = static_cast<int>(a.Wq - j < 16 ? a.Wq - j : 16);
        const uint8_t* src[16];
        for (int p = 0; p < np; ++p) {
          const int64_t iw = (j + p) * sw + pw - g.pad_left;
          src[p] = row_inside && iw >= 0 && iw < g.W ? row + iw * C : nullptr;
        }
        to_planes(src, np, C, base + j, set_bytes);
      }
    }
  });
}

// Window mode: the channels of pixels [q0, q0 + len) of image n (1x1, unpadded: virtual pixel
// q = (oh, ow) reads input pixel (oh * sh, ow * sw)) into window[c][kSparseInt8WindowLd].
void fill_window(const SparseInt8ConvArgs& a, const PixelsToPlanes& to_planes, int64_t n,
                 int64_t q0, int64_t len, uint8_t* window) {
  const Conv2dGeometry& g = a.g;
  for (int64_t p0 = 0; p0 < len; p0 += 16) {
    const int np = static_cast<int>(len - p0 < 16 ? len - p0 : 16);
    const uint8_t* src[16];
    for (int p = 0; p < np; ++p) {
      const int64_t q = q0 + p0 + p, oh = q / g.OW, ow = q % g.OW;
      src[p] = a.x + ((n * g.H + oh * g.stride_h) * g.W + ow * g.stride_w) * g.C;
    }
    to_planes(src, np, g.C, window + p0, kSparseInt8WindowLd);
  }
}

template <int S, Int8OutKind KIND>
void task(const SparseInt8ConvArgs& a, int64_t n, int64_t q0, int64_t chunk_begin,
          int64_t chunk_end) {
  alignas(64) int32_t sums[16][kMaxVectors * 16];
  const uint8_t* image;
  if (a.window) {  // this task's pixels, transposed into this thread's window (planes: null)
    uint8_t* window = static_cast<uint8_t*>(
        scratch(ScratchSlot::activations, static_cast<size_t>(a.group_bytes + 64)));
    const int64_t len = a.q_count - q0 < a.tile ? a.q_count - q0 : a.tile;
    fill_window(a, PixelsToPlanes(a), n, q0, len, window);
    image = window;
  } else {
    image = a.planes + n * a.image_bytes + q0;
  }
  const int64_t OC = a.g.OC, ocg = a.g.OC / a.g.groups, group_bytes = a.group_bytes;
  const int64_t* const row_ptr = a.row_ptr;
  const int64_t cg = a.g.C / a.g.groups;
  // Input channels in slices of 128 (groups sorted by index are sorted by channel): the
  // slice's planes stay in L1 while a chunk's 16 channels walk their groups in it. 3x3 layers
  // with 256 and 512 channels ran 15-21% faster (64: 14-19%); 1x1 layers, with a few groups
  // per channel and slice, 5-34% slower (the accumulators saved and reloaded per slice).
  const int64_t slice_channels = a.g.KH * a.g.KW > 1 ? kSliceChannels : cg;
  const int64_t slices = (cg + slice_channels - 1) / slice_channels;
  const int64_t slice_k = slice_channels * a.g.KH * a.g.KW;
  for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
    const int64_t oc0 = chunk * 16;
    const int count = static_cast<int>(OC - oc0 < 16 ? OC - oc0 : 16);
    int64_t cursor[16];
    for (int i = 0; i < count; ++i) cursor[i] = row_ptr[oc0 + i];
    for (int64_t s = 0; s < slices; ++s) {
      const int32_t k_limit = s + 1 == slices ? INT32_MAX : static_cast<int32_t>((s + 1) * slice_k);
      for (int i = 0; i < count; ++i) {
        const int64_t oc = oc0 + i;
        cursor[i] = channel_group_sums<S>(image + (oc / ocg) * group_bytes, a.block_k,
                                          a.values32, cursor[i], row_ptr[oc + 1], k_limit,
                                          a.k_offset, sums[i], s == 0, s + 1 == slices, sums[i]);
      }
    }
    for (int i = count; i < 16; ++i) {  // rows of absent channels: defined, masked off
      for (int v = 0; v < 4 * S; ++v) {
        _mm512_store_si512(sums[i] + 16 * v, _mm512_setzero_si512());
      }
    }
    store_chunk<4 * S, KIND>(a, sums, count, oc0, n, q0);
  }
}

template <Int8OutKind KIND>
void run(const SparseInt8ConvArgs& a) {
  if (!a.window) fill_byte_planes(a);
  using TaskFn = void (*)(const SparseInt8ConvArgs&, int64_t, int64_t, int64_t, int64_t);
  static constexpr TaskFn kTasks[kMaxSets + 1] = {nullptr, task<1, KIND>, task<2, KIND>};
  const int64_t chunks = (a.g.OC + 15) / 16;
  for_each_pixel_tile(a.g.N, a.q_count, a.tile, chunks,
                      [&](int64_t n, int64_t q0, int64_t chunk_begin, int64_t chunk_end) {
                        const int64_t left = a.q_count - q0 < a.tile ? a.q_count - q0 : a.tile;
                        kTasks[(left + kPixelsPerSet - 1) / kPixelsPerSet](a, n, q0, chunk_begin,
                                                                          chunk_end);
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

}  // namespace avx512_vnni
}  // namespace pyfastcnn
