// INT8 GEMM and implicit-GEMM conv for AVX2+FMA with the requantization epilogue fused.
//
// Exact for every int8 value: vpmaddwd multiplies int16 pairs (A widened from bytes, B
// sign-extended) into int32 lanes, where vpmaddubsw would saturate at int16 on full-range
// inputs. Per call, A (or the conv's padded source) is widened once to uint16, so that a row's
// pair of k values is one 32-bit broadcast from memory (building the pair from two bytes per
// row and k-pair cost as much as the multiplies). B is packed once into panels of 16 columns:
// [K/2][16][2] int16, two ymm per k-pair. The micro-kernel holds a 6 x 16 tile of int32 sums
// (12 ymm) starting at col_offset and applies the epilogue before storing; a task owns MC rows
// x NCP panels (tile_loop.h), so its widened rows stay in L2 while each panel is reused by
// every row tile.
#include <immintrin.h>

#include <cstring>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/memory.h"
#include "pyfastcnn/parallel.h"
#include "../tile_loop.h"
#include "int8_epilogue_avx2.h"

namespace pyfastcnn {
namespace avx2 {
namespace {

constexpr int kNR = 16;        // columns per panel: two ymm of int32 sums
constexpr int kMR = 6;         // rows per micro-tile: 6 x 2 ymm = 12 accumulators
constexpr int64_t kMC = 48;    // rows per task (a multiple of kMR)
constexpr int64_t kNCP = 8;    // panels per task (128 columns)

int64_t k_pairs(int64_t K) { return (K + 1) / 2; }
int64_t panel_elems(int64_t K) { return k_pairs(K) * 2 * kNR; }  // int16 elements
int64_t num_panels(int64_t N) { return (N + kNR - 1) / kNR; }

int32_t load_pair(const uint16_t* a) {
  int32_t v;
  std::memcpy(&v, a, 4);
  return v;
}

// dst[i] = src[i] ^ flip for i < n, zero-extended to uint16 (flip 0x80: int8 to uint8 + 128).
void widen_run(const uint8_t* src, int64_t n, uint8_t flip, uint16_t* dst) {
  const __m128i flip16 = _mm_set1_epi8(static_cast<char>(flip));
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i b =
        _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)), flip16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_cvtepu8_epi16(b));
  }
  for (; i < n; ++i) dst[i] = static_cast<uint8_t>(src[i] ^ flip);
}

// widen_run over n bytes, in parallel chunks.
void widen(const uint8_t* src, int64_t n, uint16_t* dst) {
  constexpr int64_t kChunk = 1 << 15;
  parallel_for((n + kChunk - 1) / kChunk, 1, [=](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t lo = c * kChunk, hi = lo + kChunk < n ? lo + kChunk : n;
      widen_run(src + lo, hi - lo, 0, dst + lo);
    }
  });
}

// Adds an MR x 16 tile: acc[r] += row r . panel, where row r is the concatenation of the runs
// rows[r] + segments[s] (s < num_segments) of 2 * pairs uint16 values each. Accumulators are
// named variables, not an array: with an array GCC spills the tile on every k-step.
#define PYFASTCNN_ROW_DOT(r)                                            \
  if constexpr (MR > r) {                                               \
    const __m256i av = _mm256_set1_epi32(load_pair(a##r + 2 * kp));     \
    c##r##0 = _mm256_add_epi32(c##r##0, _mm256_madd_epi16(av, b0));     \
    c##r##1 = _mm256_add_epi32(c##r##1, _mm256_madd_epi16(av, b1));     \
  }
#define PYFASTCNN_ROW_VARS(r)                                                    \
  const uint16_t* base##r = rows[MR > r ? r : 0];                                \
  __m256i c##r##0 = acc[MR > r ? r : 0][0], c##r##1 = acc[MR > r ? r : 0][1];
#define PYFASTCNN_ROW_SEGMENT(r) const uint16_t* a##r = base##r + offset;
#define PYFASTCNN_ROW_SAVE(r)  \
  if constexpr (MR > r) {      \
    acc[r][0] = c##r##0;       \
    acc[r][1] = c##r##1;       \
  }
#define PYFASTCNN_FOR_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

template <int MR>
__attribute__((always_inline)) inline void dot_tile(const uint16_t* const* rows,
                                                    const int64_t* segments,
                                                    int64_t num_segments, int64_t pairs,
                                                    const int16_t* panel, __m256i acc[][2]) {
  static_assert(MR >= 1 && MR <= kMR, "tile rows");
  PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_VARS)
  const int16_t* bp = panel;
  for (int64_t s = 0; s < num_segments; ++s) {
    const int64_t offset = segments[s];
    PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_SEGMENT)
    for (int64_t kp = 0; kp < pairs; ++kp, bp += 2 * kNR) {
      const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp));
      const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp + kNR));
      PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_DOT)
    }
  }
  PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_SAVE)
}
#undef PYFASTCNN_FOR_ROWS
#undef PYFASTCNN_ROW_SAVE
#undef PYFASTCNN_ROW_SEGMENT
#undef PYFASTCNN_ROW_VARS
#undef PYFASTCNN_ROW_DOT

// One MR x 16 tile: rows rows[r] (output rows m + r at c_rows[r]) over `segments`, columns
// n0 .. n0 + cols of `panel` (epilogue arrays indexed from n0).
template <int MR, Int8OutKind KIND>
void tile(const uint16_t* const* rows, const int64_t* segments, int64_t num_segments,
          int64_t pairs, const int16_t* panel, const Int8Epilogue& epi, int64_t n0, int cols,
          char* const* c_rows, int64_t m) {
  const ChannelOperands8 c0 = channel_operands<KIND>(epi, n0, cols);
  const ChannelOperands8 c1 = channel_operands<KIND>(epi, n0 + 8, cols - 8);
  __m256i acc[MR][2];
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = c0.offset;
    acc[r][1] = c1.offset;
  }
  dot_tile<MR>(rows, segments, num_segments, pairs, panel, acc);
  for (int r = 0; r < MR; ++r) {
    const uint8_t* res = epi.residual ? epi.residual + (m + r) * epi.residual_ld : nullptr;
    store_row16<KIND>(acc[r][0], acc[r][1], c0, c1, epi, c_rows[r], n0, cols, res);
  }
}

template <Int8OutKind KIND>
struct Tiles {
  using Fn = void (*)(const uint16_t* const*, const int64_t*, int64_t, int64_t, const int16_t*,
                      const Int8Epilogue&, int64_t, int, char* const*, int64_t);
  static constexpr Fn fn[kMR + 1] = {nullptr,          tile<1, KIND>, tile<2, KIND>,
                                     tile<3, KIND>,    tile<4, KIND>, tile<5, KIND>,
                                     tile<6, KIND>};
};

// Runs the tiles of an M x N problem: rows_of(state, m) gives the MR row pointers of output
// rows m.., c_row(m) the output row; the tile loop may hand two panels at once (np = 2).
template <Int8OutKind KIND, class Setup, class RowsOf, class CRow>
void run_tiles(int64_t M, int64_t N, const int16_t* packed, int64_t K, const int64_t* segments,
               int64_t num_segments, int64_t pairs, const Int8Epilogue& epi, int64_t n_base,
               const Setup& setup, const RowsOf& rows_of, const CRow& c_row) {
  const int64_t stride = panel_elems(K);
  for_each_tile<kMR, kMC, kNCP>(M, N, kNR, 1, setup,
                                [&](const auto& state, int64_t, int64_t m, int rows, int64_t p,
                                    int np, int64_t n0, int cols) {
    const uint16_t* a_rows[kMR];
    char* c_rows[kMR];
    rows_of(state, m, rows, a_rows);
    for (int r = 0; r < rows; ++r) c_rows[r] = c_row(m + r);
    for (int j = 0; j < np; ++j) {
      const int part = cols - kNR * j < kNR ? cols - kNR * j : kNR;
      Tiles<KIND>::fn[rows](a_rows, segments, num_segments, pairs, packed + (p + j) * stride,
                            epi, n_base + n0 + kNR * j, part, c_rows, m);
    }
  });
}

template <Int8OutKind KIND>
void gemm(const Int8GemmArgs& args) {
  const Int8GemmShape s = args.shape;
  // A widened to uint16 rows of K rounded up to even (the pad pair meets B's zero rows).
  const int64_t ld = 2 * k_pairs(s.K);
  uint16_t* wide = static_cast<uint16_t*>(
      scratch(ScratchSlot::widened, static_cast<size_t>(s.M * ld) * sizeof(uint16_t)));
  // int8 A (a_signed) gets the +128 shift here (byte ^ 0x80), which col_offset accounts for.
  const uint8_t flip = args.a_signed ? 0x80 : 0;
  parallel_for(s.M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      widen_run(args.a + m * args.lda, s.K, flip, wide + m * ld);
      if (ld > s.K) wide[m * ld + s.K] = 0;
    }
  });
  char* c = static_cast<char*>(args.c);
  const int64_t row_bytes = args.ldc * out_bytes(KIND);
  const int64_t whole_row = 0;
  run_tiles<KIND>(
      s.M, s.N, static_cast<const int16_t*>(args.packed_b), s.K, &whole_row, 1, ld / 2, args.epi,
      0, [](int64_t, int64_t) { return 0; },
      [&](int, int64_t m, int rows, const uint16_t** a_rows) {
        for (int r = 0; r < rows; ++r) a_rows[r] = wide + (m + r) * ld;
      },
      [&](int64_t m) { return c + m * row_bytes; });
}

template <Int8OutKind KIND>
void conv(const Int8ConvArgs& args) {
  const int64_t K = args.num_segments * args.segment_len;
  const int64_t M = args.N * args.OH * args.OW;
  const int64_t out_pixel_bytes = args.groups * args.ocg * out_bytes(KIND);
  char* out = static_cast<char*>(args.out);
  // 1x1 convs (one segment within a pixel) widen each task's rows into a per-thread buffer
  // that stays in cache: widening the whole source first sent it through memory twice more
  // (and 4x the pixels a stride-2 conv reads).
  const bool per_task = args.num_segments == 1 && args.segment_offset[0] == 0 &&
                        args.segment_len <= args.Cs;
  uint16_t* src = nullptr;
  if (!per_task) {  // the padded source widened to uint16 (+ slack: a tile's last pair may be
                    // read past a row)
    const int64_t n = args.N * args.Hs * args.Ws * args.Cs;
    src = static_cast<uint16_t*>(
        scratch(ScratchSlot::widened, static_cast<size_t>(n + 64) * sizeof(uint16_t)));
    widen(args.src, n, src);
    std::memset(src + n, 0, 64 * sizeof(uint16_t));
  }
  for (int64_t grp = 0; grp < args.groups; ++grp) {
    const int16_t* packed = reinterpret_cast<const int16_t*>(
        static_cast<const char*>(args.packed_b) + grp * args.group_bytes);
    const auto rows_of = [&](const ConvTaskRows<uint16_t, kMC>& t, int64_t m, int rows,
                             const uint16_t** a_rows) {
      for (int r = 0; r < rows; ++r) a_rows[r] = t.base[m + r - t.first];
    };
    const auto c_row = [&](int64_t m) { return out + m * out_pixel_bytes; };
    const auto run = [&](const auto& setup) {
      run_tiles<KIND>(M, args.ocg, packed, K, args.segment_offset, args.num_segments,
                      args.segment_len / 2, args.epi, grp * args.ocg, setup, rows_of, c_row);
    };
    if (per_task) {
      run([&](int64_t m_begin, int64_t m_end) {
        const ConvTaskRows<uint8_t, kMC> bytes = conv_task_rows<uint8_t, kMC>(
            args.src, args.Hs, args.Ws, args.Cs, args.OH, args.OW, args.stride_h,
            args.stride_w, grp * args.cg4, m_begin, m_end);
        const int64_t len = args.segment_len;
        uint16_t* wide = static_cast<uint16_t*>(scratch(
            ScratchSlot::activations, static_cast<size_t>(kMC * len) * sizeof(uint16_t)));
        ConvTaskRows<uint16_t, kMC> t;
        t.first = m_begin;
        for (int64_t m = m_begin; m < m_end; ++m) {
          uint16_t* row = wide + (m - m_begin) * len;
          widen_run(bytes.base[m - m_begin], len, 0, row);
          t.base[m - m_begin] = row;
        }
        return t;
      });
    } else {
      run([&](int64_t m_begin, int64_t m_end) {
        return conv_task_rows<uint16_t, kMC>(src, args.Hs, args.Ws, args.Cs, args.OH, args.OW,
                                             args.stride_h, args.stride_w, grp * args.cg4,
                                             m_begin, m_end);
      });
    }
  }
}

}  // namespace

size_t int8_packed_b_bytes(int64_t K, int64_t N) {
  return static_cast<size_t>(num_panels(N) * panel_elems(K)) * sizeof(int16_t);
}

void int8_pack_b(const int8_t* b, int64_t ldb, int64_t K, int64_t N, void* packed) {
  int16_t* dst = static_cast<int16_t*>(packed);
  const int64_t kp_count = k_pairs(K);
  for (int64_t p = 0; p < num_panels(N); ++p) {
    for (int64_t kp = 0; kp < kp_count; ++kp, dst += 2 * kNR) {
      for (int j = 0; j < kNR; ++j) {
        // Column j: lanes 2j, 2j + 1 of the pair's 32 int16 (vector j / 8, dword j % 8).
        const int64_t col = p * kNR + j, k = 2 * kp;
        int16_t* lane = dst + 2 * j;
        lane[0] = col < N ? b[k * ldb + col] : 0;
        lane[1] = (col < N && k + 1 < K) ? b[(k + 1) * ldb + col] : 0;
      }
    }
  }
}

// See Int8RepackConvRowsFn (kernels.h): row k of the output comes from row ok of the input
// (or is zero); rows are int16 lanes of the panels' k-pairs (lane k % 2 of pair k / 2).
void int8_repack_conv_rows(const void* packed, int64_t KH, int64_t KW, int64_t C, int64_t N,
                           int64_t stack, int64_t Lq, void* out) {
  const int64_t c4 = (C + 3) / 4 * 4, K = (KH + stack - 1) / stack * Lq;
  const int64_t in_stride = panel_elems(KH * KW * c4), out_stride = panel_elems(K);
  const int16_t* src = static_cast<const int16_t*>(packed);
  int16_t* dst = static_cast<int16_t*>(out);
  for (int64_t p = 0; p < num_panels(N); ++p, src += in_stride, dst += out_stride) {
    for (int64_t k = 0; k < K; ++k) {
      int16_t* __restrict d = dst + (k / 2) * 2 * kNR + k % 2;
      const int64_t ok = conv_rows_source(k, KH, KW, C, stack, Lq);
      if (ok < 0) {
        for (int j = 0; j < kNR; ++j) d[2 * j] = 0;
        continue;
      }
      const int16_t* __restrict s = src + (ok / 2) * 2 * kNR + ok % 2;
      for (int j = 0; j < kNR; ++j) d[2 * j] = s[2 * j];
    }
  }
}

void int8_gemm(const Int8GemmArgs& args) {
  with_out_kind(args.epi.kind, [&](auto kind) {
    using K = decltype(kind);
    gemm<K::value>(args);
  });
}

void int8_conv(const Int8ConvArgs& args) {
  with_out_kind(args.epi.kind, [&](auto kind) {
    using K = decltype(kind);
    conv<K::value>(args);
  });
}

}  // namespace avx2
}  // namespace pyfastcnn
