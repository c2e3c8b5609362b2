// Sparse INT8 convolution for AVX-512 VNNI (see SparseInt8ConvArgs in kernels.h).
//
// Layout choice: vector lanes are 16 output *pixels*, not 16 output channels. A weight block is
// 4 input channels of ONE output channel at one tap (block-4 along the reduction), so each
// output channel walks only its own blocks: per block, one 4-byte weight broadcast and, per 16
// virtual pixels, one 64-byte activation load (16 pixels x 4 channels, contiguous in the
// virtual planes) and one vpdpbusd. Nothing is wasted on other channels' zeros. With lanes = 16
// output channels instead, a 16 x 4 block could only be skipped when all 16 channels are zero
// there: for independently pruned 4-wide blocks at 90% sparsity that happens for 0.9^16 = 19%
// of them, so ~80% of the dense work would remain.
//
// A task owns `tile` virtual pixels (up to 8 zmm accumulators) of one image for a range of
// 16-channel chunks. Per chunk, each channel's sums go to a small buffer; 16 x 16 int32 blocks
// are then transposed so that a register holds 16 channels of one pixel, and the shared
// requantization epilogue (int8_epilogue_avx512vnni.h) stores them into the NHWC output.
// Activations are unsigned (int8 input was flipped to uint8 + 128 in the planes); weights
// signed: exactly vpdpbusd's operand types, and the zero point comes back through col_offset.
// GCC 12 warns that _mm512_undefined_*() in its own headers is uninitialized (fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/memory.h"
#include "../tile_loop.h"
#include "sparse_int8_store_avx512vnni.h"

namespace pyfastcnn {
namespace avx512_vnni {
namespace {

// One channel's blocks j .. end whose k is below k_limit (one slice of input quads) added to
// the sums at dst[0 .. 16T) (which start at zero when `first`). Returns the first block not done.
#define PYFASTCNN_SPARSE_DOT(t) \
  if constexpr (T > t) c##t = _mm512_dpbusd_epi32(c##t, _mm512_loadu_si512(p + 64 * t), w);
#define PYFASTCNN_SPARSE_LOAD(t) \
  if constexpr (T > t) c##t = _mm512_load_si512(dst + 16 * t);
#define PYFASTCNN_SPARSE_STORE(t) \
  if constexpr (T > t) _mm512_store_si512(dst + 16 * t, c##t);
template <int T>
int64_t channel_sums(const uint8_t* base, const int32_t* block_k, const int32_t* values32,
                     int64_t j, int64_t end, int32_t k_limit, const int32_t* k_offset,
                     bool first, int32_t* dst) {
  __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0,
          c7 = c0;
  if (!first) {
    PYFASTCNN_SPARSE_LOAD(0) PYFASTCNN_SPARSE_LOAD(1) PYFASTCNN_SPARSE_LOAD(2)
    PYFASTCNN_SPARSE_LOAD(3) PYFASTCNN_SPARSE_LOAD(4) PYFASTCNN_SPARSE_LOAD(5)
    PYFASTCNN_SPARSE_LOAD(6) PYFASTCNN_SPARSE_LOAD(7)
  }
  for (; j < end && block_k[j] < k_limit; ++j) {
    const uint8_t* p = base + k_offset[block_k[j]];
    const __m512i w = _mm512_set1_epi32(values32[j]);
    PYFASTCNN_SPARSE_DOT(0) PYFASTCNN_SPARSE_DOT(1) PYFASTCNN_SPARSE_DOT(2)
    PYFASTCNN_SPARSE_DOT(3) PYFASTCNN_SPARSE_DOT(4) PYFASTCNN_SPARSE_DOT(5)
    PYFASTCNN_SPARSE_DOT(6) PYFASTCNN_SPARSE_DOT(7)
  }
  PYFASTCNN_SPARSE_STORE(0) PYFASTCNN_SPARSE_STORE(1) PYFASTCNN_SPARSE_STORE(2)
  PYFASTCNN_SPARSE_STORE(3) PYFASTCNN_SPARSE_STORE(4) PYFASTCNN_SPARSE_STORE(5)
  PYFASTCNN_SPARSE_STORE(6) PYFASTCNN_SPARSE_STORE(7)
  return j;
}
#undef PYFASTCNN_SPARSE_STORE
#undef PYFASTCNN_SPARSE_LOAD
#undef PYFASTCNN_SPARSE_DOT

// Window mode (SparseInt8ConvArgs::window: 1x1, unpadded, groups 1): the channels of pixels
// [q0, q0 + len) of image n (virtual pixel q = (oh, ow) reads input pixel (oh * sh, ow * sw))
// into window[quad][kSparseInt8WindowLd][4] as in the planes (bytes ^ flip, bytes past C the
// zero point), 16 pixels x 16 quads per transpose. Lanes past len repeat the last pixel: whole
// vectors, whose extra sums are never stored.
void fill_window(const SparseInt8ConvArgs& a, int64_t n, int64_t q0, int64_t len,
                 uint8_t* window) {
  const Conv2dGeometry& g = a.g;
  const int64_t C = g.C, quads = (C + 3) / 4, row_bytes = a.quad_bytes;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(a.flip));
  const __m512i zp = _mm512_set1_epi8(static_cast<char>(a.zero_point ^ a.flip));
  int64_t oh = q0 / g.OW, ow = q0 % g.OW;  // of the next pixel (stepped, no division each)
  for (int64_t p0 = 0; p0 < len; p0 += 16) {
    const uint8_t* src[16];
    for (int p = 0; p < 16; ++p) {
      src[p] = a.x + ((n * g.H + oh * g.stride_h) * g.W + ow * g.stride_w) * C;
      if (p0 + p + 1 < len && ++ow == g.OW) ow = 0, ++oh;
    }
    for (int64_t gq0 = 0; gq0 < quads; gq0 += 16) {
      const int nq = static_cast<int>(quads - gq0 < 16 ? quads - gq0 : 16);
      const int64_t bytes = C - 4 * gq0 < 64 ? C - 4 * gq0 : 64;
      const __mmask64 byte_mask = bytes == 64 ? ~__mmask64{0} : (__mmask64{1} << bytes) - 1;
      __m512i v[16];
      for (int p = 0; p < 16; ++p) v[p] = _mm512_mask_loadu_epi8(zp, byte_mask, src[p] + 4 * gq0);
      transpose16(v);
      for (int qd = 0; qd < nq; ++qd) {
        _mm512_store_si512(window + (gq0 + qd) * row_bytes + 4 * p0, _mm512_xor_si512(v[qd], flip));
      }
    }
  }
}

template <int T, Int8OutKind KIND>
void task(const SparseInt8ConvArgs& a, int64_t slice_k, int64_t n, int64_t q0,
          int64_t chunk_begin, int64_t chunk_end) {
  alignas(64) int32_t sums[16][kMaxVectors * 16];
  const uint8_t* image;
  if (a.window) {  // this task's pixels, transposed into this thread's window (planes: null)
    uint8_t* window = static_cast<uint8_t*>(
        scratch(ScratchSlot::activations, static_cast<size_t>(a.group_bytes + 64)));
    fill_window(a, n, q0, a.q_count - q0 < a.tile ? a.q_count - q0 : a.tile, window);
    image = window;
  } else {
    image = a.planes + n * a.image_bytes + 4 * q0;
  }
  const int64_t OC = a.g.OC, ocg = a.g.OC / a.g.groups, group_bytes = a.group_bytes;
  const int64_t* const row_ptr = a.row_ptr;
  const int64_t k_count = (a.g.C / a.g.groups + 3) / 4 * a.g.KH * a.g.KW;
  for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
    const int64_t oc0 = chunk * 16;
    const int count = static_cast<int>(OC - oc0 < 16 ? OC - oc0 : 16);
    int64_t cursor[16];
    for (int i = 0; i < count; ++i) cursor[i] = row_ptr[oc0 + i];
    int64_t k0 = 0;
    do {  // the chunk's channels, slice by slice (at least once: sums of no input are zero)
      const int32_t k_limit =
          k0 + slice_k < k_count ? static_cast<int32_t>(k0 + slice_k) : INT32_MAX;
      for (int i = 0; i < count; ++i) {
        const int64_t oc = oc0 + i;
        cursor[i] = channel_sums<T>(image + (oc / ocg) * group_bytes, a.block_k, a.values32,
                                    cursor[i], row_ptr[oc + 1], k_limit, a.k_offset, k0 == 0,
                                    sums[i]);
      }
      k0 += slice_k;
    } while (k0 < k_count);
    for (int i = count; i < 16; ++i) {  // rows of absent channels: defined, masked off below
      for (int v = 0; v < T; ++v) _mm512_store_si512(sums[i] + 16 * v, _mm512_setzero_si512());
    }
    store_chunk<T, KIND>(a, sums, count, oc0, n, q0);
  }
}

// The planes from NHWC input when channel quad gq of the whole input is plane gq (one group, or
// groups of a multiple of 4 channels): per plane row, 16 pixels x 16 quads are loaded as 16 rows
// of up to 64 bytes (bytes past the last channel read as the zero point), transposed, and
// stored as 16 plane segments of 16 pixels.
void fill_planes(const SparseInt8ConvArgs& a) {
  const Conv2dGeometry& g = a.g;
  const int64_t sh = g.stride_h, sw = g.stride_w, quads = (g.C + 3) / 4;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(a.flip));
  const __m512i zp = _mm512_set1_epi8(static_cast<char>(a.zero_point ^ a.flip));
  parallel_for(g.N * sh * sw * a.Hq, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r % a.Hq, phase = r / a.Hq % (sh * sw), n = r / a.Hq / (sh * sw);
      const int64_t ph = phase / sw, pw = phase % sw, ih = i * sh + ph - g.pad_top;
      uint8_t* base = a.planes + n * a.image_bytes + phase * a.plane_pixels * 4 + i * a.Wq * 4;
      // Columns j0 .. j1 read the image (iw = j * sw + pw - pad_left in [0, W)).
      int64_t j0 = 0, j1 = 0;
      if (ih >= 0 && ih < g.H) {
        const int64_t lo = g.pad_left - pw, hi = g.W + g.pad_left - pw;  // j * sw in [lo, hi)
        j0 = lo <= 0 ? 0 : (lo + sw - 1) / sw;
        j1 = hi <= 0 ? 0 : (hi + sw - 1) / sw;
        j0 = j0 < a.Wq ? j0 : a.Wq;
        j1 = j1 < a.Wq ? (j1 > j0 ? j1 : j0) : a.Wq;
      }
      for (int64_t gq = 0; j0 > 0 && gq < quads; ++gq) {
        std::memset(base + gq * a.quad_bytes, a.zero_point, 4 * j0);
      }
      for (int64_t gq = 0; j1 < a.Wq && gq < quads; ++gq) {
        std::memset(base + gq * a.quad_bytes + 4 * j1, a.zero_point, 4 * (a.Wq - j1));
      }
      if (j1 <= j0) continue;
      const uint8_t* in = a.x + (n * g.H + ih) * g.W * g.C + (pw - g.pad_left) * g.C;
      for (int64_t gq0 = 0; gq0 < quads; gq0 += 16) {
        const int nq = static_cast<int>(quads - gq0 < 16 ? quads - gq0 : 16);
        const int64_t bytes = g.C - 4 * gq0 < 64 ? g.C - 4 * gq0 : 64;
        const __mmask64 byte_mask = bytes == 64 ? ~__mmask64{0} : (__mmask64{1} << bytes) - 1;
        for (int64_t j = j0; j < j1; j += 16) {
          const int np = static_cast<int>(j1 - j < 16 ? j1 - j : 16);
          __m512i v[16];
          for (int p = 0; p < 16; ++p) {
            v[p] = p < np ? _mm512_mask_loadu_epi8(zp, byte_mask, in + (j + p) * sw * g.C + 4 * gq0)
                          : zp;
          }
          transpose16(v);
          const __mmask16 pixel_mask = lane_mask(np);
          for (int qd = 0; qd < nq; ++qd) {
            _mm512_mask_storeu_epi32(base + (gq0 + qd) * a.quad_bytes + 4 * j, pixel_mask,
                                     _mm512_xor_si512(v[qd], flip));
          }
        }
      }
    }
  });
}

constexpr int kMaxCopies = 4;

// Block loads sit at plane offsets that are a multiple of 64 bytes (the task base, planes, rows
// when Wq % 16 == 0) plus the block's k_offset. When the k_offsets fall into a few residues
// mod 64 (the kw shifts), one copy of the planes per residue r, shifted left by r bytes, makes
// every load whole-cache-line: block k reads copy(r) at k_offset[k] - r. Returns the number of
// copies, or 0 (leaving `b` alone) when there is a single residue already or too many to be
// worth the copies.
int align_with_shifted_copies(const SparseInt8ConvArgs& a, SparseInt8ConvArgs* b) {
  const int64_t k_count = (a.g.C / a.g.groups + 3) / 4 * a.g.KH * a.g.KW;
  int32_t residues[kMaxCopies];
  int copies = 0;
  bool has_zero = false;
  for (int64_t k = 0; k < k_count; ++k) {
    const int32_t r = a.k_offset[k] & 63;
    int i = 0;
    while (i < copies && residues[i] != r) ++i;
    if (i == copies) {
      if (copies == kMaxCopies) return 0;
      residues[copies++] = r;
    }
    has_zero |= r == 0;
  }
  if (copies == 1 && has_zero) return 0;
  const int64_t bytes = a.g.N * a.image_bytes + 128;  // the planes and their slack
  const int64_t copy_bytes = (bytes + 63) / 64 * 64;
  if (copies * copy_bytes > (int64_t{1} << 31) - 1024) return 0;
  // Worth it only when (1) the copies of the planes one task reads still fit in L1 (measured:
  // 3 copies of 24 KB made 128-128-28 at 50% sparsity 14% slower, 3 x 16 KB made 64-64-56 10%
  // faster), and (2) the split loads saved (~0.25 cycle each, measured) outweigh copying the
  // planes (~20 bytes per cycle).
  const int64_t phases = a.g.stride_h * a.g.stride_w, cq = (a.g.C / a.g.groups + 3) / 4;
  const int64_t rows = (a.tile + a.Wq - 1) / a.Wq + (a.g.KH - 1) * a.g.dil_h / a.g.stride_h;
  const int64_t task_bytes = cq * phases * rows * a.Wq * 4;
  if (copies * task_bytes > 48 * 1024) return 0;
  int64_t misaligned_k = 0;
  for (int64_t k = 0; k < k_count; ++k) misaligned_k += (a.k_offset[k] & 63) != 0;
  const int64_t blocks = a.row_ptr[a.g.OC], vectors = a.g.N * ((a.q_count + 15) / 16);
  const double split_loads = static_cast<double>(blocks) * misaligned_k / k_count * vectors;
  if (0.25 * split_loads < copies * copy_bytes / 20.0) return 0;
  uint8_t* dst = static_cast<uint8_t*>(scratch(ScratchSlot::columns, copies * copy_bytes));
  int32_t* offsets = static_cast<int32_t*>(
      scratch(ScratchSlot::int32_sums, static_cast<size_t>(k_count) * sizeof(int32_t)));
  parallel_for(copies * 16, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {  // 16 slices per copy, for the threads
      const int64_t c = t / 16, r = residues[c], slice = (copy_bytes + 15) / 16;
      const int64_t lo = t % 16 * slice, hi = lo + slice < copy_bytes ? lo + slice : copy_bytes;
      const int64_t valid = bytes - r;  // bytes of the copy that come from the planes
      if (lo < valid) std::memcpy(dst + c * copy_bytes + lo, a.planes + lo + r,
                                  (hi < valid ? hi : valid) - lo);
      if (hi > valid) {
        const int64_t from = lo > valid ? lo : valid;
        std::memset(dst + c * copy_bytes + from, a.zero_point, hi - from);
      }
    }
  });
  for (int64_t k = 0; k < k_count; ++k) {
    const int32_t r = a.k_offset[k] & 63;
    int c = 0;
    while (residues[c] != r) ++c;
    offsets[k] = static_cast<int32_t>(c * copy_bytes + a.k_offset[k] - r);
  }
  *b = a;
  b->planes = dst;
  b->k_offset = offsets;
  return copies;
}

// Input quads per slice: the planes of one slice that a task reads (a window row, or the rows
// of the tile and the kernel's reach in every phase, in every shifted copy) fit in L1 while a
// chunk's 16 channels walk their blocks in it. One slice where they all fit: each slice costs
// every channel a reload of its sums and a loop exit. (Zen 4, 1 thread, 50 and 90% blocks:
// 256-256-14 and 512-512-7 8-10% faster, 1024-256-14 at 50% 1.3-1.5x; below 28 KB, slicing
// did not pay.)
constexpr int64_t kL1Bytes = 28 * 1024, kSliceBytes = 16 * 1024;
int64_t slice_quads(const SparseInt8ConvArgs& a, int copies) {
  const Conv2dGeometry& g = a.g;
  const int64_t quads = (g.C / g.groups + 3) / 4, phases = g.stride_h * g.stride_w;
  const int64_t rows = (a.tile + a.Wq - 1) / a.Wq + (g.KH - 1) * g.dil_h / g.stride_h + 1;
  const int64_t per_quad =
      a.window ? a.quad_bytes : phases * rows * a.Wq * 4 * (copies > 1 ? copies : 1);
  if (quads * per_quad <= kL1Bytes) return quads > 0 ? quads : 1;
  const int64_t slices = (quads * per_quad + kSliceBytes - 1) / kSliceBytes;
  return (quads + slices - 1) / slices;
}

template <Int8OutKind KIND>
void run(const SparseInt8ConvArgs& args) {
  // Window mode: each task fills its window; its rows are whole cache lines (no shifted copies).
  SparseInt8ConvArgs aligned;
  if (!args.window) {
    if (args.g.groups == 1 || args.g.C / args.g.groups % 4 == 0) {
      fill_planes(args);
    } else {
      ref::sparse_int8_fill_planes(args);
    }
  }
  const int copies = args.window ? 0 : align_with_shifted_copies(args, &aligned);
  const SparseInt8ConvArgs& a = copies > 0 ? aligned : args;
  const int64_t slice_k = slice_quads(a, copies) * a.g.KH * a.g.KW;
  using TaskFn =
      void (*)(const SparseInt8ConvArgs&, int64_t, int64_t, int64_t, int64_t, int64_t);
  static constexpr TaskFn kTasks[kMaxVectors + 1] = {
      nullptr,           task<1, KIND>, task<2, KIND>, task<3, KIND>, task<4, KIND>,
      task<5, KIND>,     task<6, KIND>, task<7, KIND>, task<8, KIND>};
  const int64_t chunks = (a.g.OC + 15) / 16;
  for_each_pixel_tile(a.g.N, a.q_count, a.tile, chunks,
                      [&](int64_t n, int64_t q0, int64_t chunk_begin, int64_t chunk_end) {
                        const int64_t left = a.q_count - q0 < a.tile ? a.q_count - q0 : a.tile;
                        kTasks[(left + 15) / 16](a, slice_k, n, q0, chunk_begin, chunk_end);
                      },
                      a.window ? 2 : 8);  // output-channel chunks fill the window again
}

}  // namespace

void sparse_int8_conv(const SparseInt8ConvArgs& args) {
  with_out_kind(args.epi.kind, [&](auto kind) {
    using K = decltype(kind);
    run<K::value>(args);
  });
}

}  // namespace avx512_vnni
}  // namespace pyfastcnn
