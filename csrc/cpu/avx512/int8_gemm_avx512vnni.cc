// INT8 GEMM for AVX-512 VNNI with the requantization epilogue fused in registers.
//
// vpdpbusd multiplies unsigned A bytes by signed B bytes, four at a time, into int32 lanes
// (non-saturating, so sums wrap modulo 2^32 and stay exact). B is packed once into panels of
// 32 columns: [K/4][32][4] bytes, two zmm per k-quad. The micro-kernel holds a 6 x 32 tile of
// int32 accumulators (12 zmm) that start at col_offset, and applies the epilogue (scale, bias,
// clamp, requantize) before storing. Blocking: a task owns MC rows x NCP panels, so its A block
// stays in L2 while each panel is reused by every row tile.
// GCC 12 warns that _mm512_undefined_*() in its own headers is uninitialized (fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"
#include "../tile_loop.h"
#include "int8_epilogue_avx512vnni.h"

namespace pyfastcnn {
namespace avx512_vnni {
namespace {

constexpr int kPanelCols = 32;
constexpr int kMR = 6;              // rows per micro-tile: 6 x 2 zmm = 12 accumulators
constexpr int64_t kMC = 96;         // rows per task (a multiple of kMR)
constexpr int64_t kNCP = 8;         // panels per task (256 columns)

int64_t k_quads(int64_t K) { return (K + 3) / 4; }
int64_t panel_bytes(int64_t K) { return k_quads(K) * kPanelCols * 4; }
int64_t num_panels(int64_t N) { return (N + kPanelCols - 1) / kPanelCols; }

int32_t load_quad(const uint8_t* a) {
  int32_t v;
  std::memcpy(&v, a, 4);
  return v;
}

int32_t load_tail_quad(const uint8_t* a, int64_t available) {
  uint8_t bytes[4] = {0, 0, 0, 0};  // past the end of K: multiplied by B's zero padding
  for (int64_t i = 0; i < available; ++i) bytes[i] = a[i];
  return load_quad(bytes);
}

// Adds one K-run of an MR x 32 tile: acc[r] += rows[r][0 .. K) . panel. Accumulators are named
// variables inside the loop, not an array: with an array GCC shuffles or spills the whole tile
// on every k-step.
#define PYFASTCNN_DOT_ROW(r)                                        \
  if constexpr (MR > r) {                                           \
    const __m512i av = flip(_mm512_set1_epi32(quad(a##r + 4 * kq))); \
    c##r##0 = _mm512_dpbusd_epi32(c##r##0, av, b0);                 \
    c##r##1 = _mm512_dpbusd_epi32(c##r##1, av, b1);                 \
    if constexpr (NP == 2) {                                        \
      c##r##2 = _mm512_dpbusd_epi32(c##r##2, av, b2);               \
      c##r##3 = _mm512_dpbusd_epi32(c##r##3, av, b3);               \
    }                                                               \
  }
#define PYFASTCNN_DOT_ROWS                                                             \
  PYFASTCNN_DOT_ROW(0) PYFASTCNN_DOT_ROW(1) PYFASTCNN_DOT_ROW(2) PYFASTCNN_DOT_ROW(3) \
  PYFASTCNN_DOT_ROW(4) PYFASTCNN_DOT_ROW(5)
#define PYFASTCNN_ROW_BASE(r) const uint8_t* base##r = rows[MR > r ? r : 0];
#define PYFASTCNN_ROW_SEGMENT(r) const uint8_t* a##r = base##r + offset;
#define PYFASTCNN_ROW_ACC(r)                                                  \
  __m512i c##r##0 = acc[MR > r ? r : 0][0], c##r##1 = acc[MR > r ? r : 0][1], \
          c##r##2 = acc[MR > r ? r : 0][NP == 2 ? 2 : 0],                     \
          c##r##3 = acc[MR > r ? r : 0][NP == 2 ? 3 : 1];
#define PYFASTCNN_FOR_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

// Adds an MR x (32 * NP) tile: acc[r] += row r . panels, where row r is the concatenation of
// the byte runs rows[r] + segments[s] (s < num_segments), each segment_len bytes; a partial
// group of four is only allowed at the end of a single segment (plain GEMM). With NP = 2 the
// second panel is panel + panel_stride.
// SIGNED_A: the rows hold int8; flipping the sign bit after the broadcast adds 128.
template <int MR, int NP, bool SIGNED_A = false>
__attribute__((always_inline)) inline void dot_tile(const uint8_t* const* rows, const int64_t* segments, int64_t num_segments,
              int64_t segment_len, const int8_t* panel, int64_t panel_stride,
              __m512i acc[][4]) {
  const __m512i sign_bits = _mm512_set1_epi32(static_cast<int32_t>(0x80808080u));
  const auto flip = [&](__m512i v) {
    if constexpr (SIGNED_A) return _mm512_xor_si512(v, sign_bits);
    return v;
  };
  static_assert(MR >= 1 && MR <= 6 && (NP == 1 || NP == 2), "tile shape");
  PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_BASE)
  PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_ACC)
  const int64_t full = segment_len / 4;
  const int8_t* bp = panel;
  for (int64_t s = 0; s < num_segments; ++s) {
    const int64_t offset = segments[s];
    PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_SEGMENT)
    for (int64_t kq = 0; kq < full; ++kq, bp += 128) {
      const __m512i b0 = _mm512_load_si512(bp), b1 = _mm512_load_si512(bp + 64);
      __m512i b2 = b0, b3 = b1;
      if constexpr (NP == 2) {
        b2 = _mm512_load_si512(bp + panel_stride);
        b3 = _mm512_load_si512(bp + panel_stride + 64);
      }
      const auto quad = [](const uint8_t* p) { return load_quad(p); };
      PYFASTCNN_DOT_ROWS
    }
    if (full * 4 < segment_len) {  // last, partial group of four
      const int64_t kq = full;
      const __m512i b0 = _mm512_load_si512(bp), b1 = _mm512_load_si512(bp + 64);
      __m512i b2 = b0, b3 = b1;
      if constexpr (NP == 2) {
        b2 = _mm512_load_si512(bp + panel_stride);
        b3 = _mm512_load_si512(bp + panel_stride + 64);
      }
      const int64_t left = segment_len - full * 4;
      const auto quad = [left](const uint8_t* p) { return load_tail_quad(p, left); };
      PYFASTCNN_DOT_ROWS
      bp += 128;
    }
  }
  const __m512i all[6][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13},
                             {c20, c21, c22, c23}, {c30, c31, c32, c33},
                             {c40, c41, c42, c43}, {c50, c51, c52, c53}};
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < 2 * NP; ++v) acc[r][v] = all[r][v];
  }
}
#undef PYFASTCNN_FOR_ROWS
#undef PYFASTCNN_ROW_ACC
#undef PYFASTCNN_ROW_SEGMENT
#undef PYFASTCNN_ROW_BASE
#undef PYFASTCNN_DOT_ROWS
#undef PYFASTCNN_DOT_ROW

// Accumulators of a tile start at col_offset (zero-point and sign-shift corrections).
template <int MR, int NP>
void init_tile(const Int8Epilogue& epi, int64_t n0, int cols, __m512i acc[][4]) {
  for (int v = 0; v < 2 * NP; ++v) {
    const __m512i init =
        epi.col_offset ? _mm512_maskz_loadu_epi32(lane_mask(cols - 16 * v), epi.col_offset + n0 + 16 * v)
                       : _mm512_setzero_si512();
    for (int r = 0; r < MR; ++r) acc[r][v] = init;
  }
}

// 8-bit epilogue of a tile with all 32 * NP columns: per row, the 2 * NP vectors are packed to
// bytes with saturation (the final clamp), one permute and one store instead of a clamp, a
// byte conversion and a store per vector.
template <int MR, int NP, Int8OutKind KIND>
void store_tile_bytes(__m512i acc[][4], const Int8Epilogue& epilogue, int64_t n0,
                      char* const* c_rows, const uint8_t* const* res_rows) {
  const Int8Epilogue epi = epilogue;  // a local: byte stores cannot alias it
  const OutputClamp clamp = output_clamp<KIND>(epi);
  __m512 scale[4], bias[4];
  for (int v = 0; v < 2 * NP; ++v) {
    scale[v] = _mm512_loadu_ps(epi.scale + n0 + 16 * v);
    bias[v] = Epilogue512::load_bias(epi.bias, n0 + 16 * v);
  }
  // After the packs, dword 4L + m holds channels 16m + 4L .. 16m + 4L + 3: move it to 4m + L.
  const __m512i order =
      _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  for (int r = 0; r < MR; ++r) {
    const uint8_t* res = res_rows[r] ? res_rows[r] + n0 : nullptr;
    const auto part = [&](int v) {
      return requantize_epi32(acc[r][v], scale[v], bias[v], clamp, epi,
                              res ? res + 16 * v : nullptr);
    };
    const __m512i y0 = part(0), y1 = part(1);
    const __m512i a0 = _mm512_packs_epi32(y0, y1);
    __m512i a1 = a0;
    if constexpr (NP == 2) {
      const __m512i y2 = part(2), y3 = part(3);
      a1 = _mm512_packs_epi32(y2, y3);
    }
    const __m512i b = KIND == Int8OutKind::s8 ? _mm512_packs_epi16(a0, a1)
                                              : _mm512_packus_epi16(a0, a1);
    const __m512i bytes = _mm512_permutexvar_epi32(order, b);
    if constexpr (NP == 2) {
      _mm512_storeu_si512(c_rows[r] + n0, bytes);
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(c_rows[r] + n0),
                          _mm512_castsi512_si256(bytes));
    }
  }
}

// Epilogue of a tile, rows c_rows[r] (output rows m .. m + MR), columns n0 .. n0 + cols.
template <int MR, int NP, Int8OutKind KIND>
void store_tile(__m512i acc[][4], const Int8Epilogue& epi, int64_t n0, int cols,
                char* const* c_rows, int64_t m) {
  const uint8_t* res_rows[MR];
  for (int r = 0; r < MR; ++r) {
    res_rows[r] = epi.residual ? epi.residual + (m + r) * epi.residual_ld : nullptr;
  }
  if constexpr (KIND == Int8OutKind::u8 || KIND == Int8OutKind::s8) {
    if (cols == 32 * NP) return store_tile_bytes<MR, NP, KIND>(acc, epi, n0, c_rows, res_rows);
  }
  const OutputClamp clamp = output_clamp<KIND>(epi);
  for (int v = 0; v < 2 * NP; ++v) {
    const __mmask16 mask = lane_mask(cols - 16 * v);
    const int64_t n = n0 + 16 * v;
    __m512 scale = _mm512_setzero_ps(), bias = _mm512_setzero_ps();
    if constexpr (KIND != Int8OutKind::i32) {
      scale = _mm512_maskz_loadu_ps(mask, epi.scale + n);
      bias = Epilogue512::load_bias(epi.bias, n, mask);
    }
    for (int r = 0; r < MR; ++r) {
      store_tile_vector<KIND>(acc[r][v], mask, scale, bias, clamp, epi, c_rows[r], n,
                              res_rows[r]);
    }
  }
}

// One MR x (32 * NP) GEMM tile: rows a + r * lda (output rows m + r), columns n0 .. n0 + cols
// of NP packed panels.
template <int MR, int NP, Int8OutKind KIND, bool SIGNED_A>
void gemm_tile(const uint8_t* a, int64_t lda, const int8_t* panel, int64_t panel_stride,
               int64_t K, int64_t n0, int cols, const Int8Epilogue& epi, char* c,
               int64_t row_bytes, int64_t m) {
  const uint8_t* rows[MR];
  char* c_rows[MR];
  for (int r = 0; r < MR; ++r) {
    rows[r] = a + r * lda;
    c_rows[r] = c + r * row_bytes;
  }
  __m512i acc[MR][4];
  init_tile<MR, NP>(epi, n0, cols, acc);
  const int64_t whole_row = 0;
  dot_tile<MR, NP, SIGNED_A>(rows, &whole_row, 1, K, panel, panel_stride, acc);
  store_tile<MR, NP, KIND>(acc, epi, n0, cols, c_rows, m);
}

// One MR x (32 * NP) conv tile: output pixels m .. m + MR with source rows base[0..MR) and
// output rows c_rows[0..MR), channels n0 .. n0 + cols of group grp.
template <int MR, int NP, Int8OutKind KIND>
void conv_tile(const Int8ConvArgs& g, int64_t grp, const uint8_t* const* base,
               char* const* c_rows, const int8_t* panel, int64_t panel_stride, int64_t n0,
               int cols, int64_t m) {
  __m512i acc[MR][4];
  init_tile<MR, NP>(g.epi, grp * g.ocg + n0, cols, acc);
  dot_tile<MR, NP>(base, g.segment_offset, g.num_segments, g.segment_len, panel, panel_stride,
                   acc);
  store_tile<MR, NP, KIND>(acc, g.epi, grp * g.ocg + n0, cols, c_rows, m);
}

template <Int8OutKind KIND, int NP, bool SIGNED_A = false>
struct Tiles {
  using GemmFn = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, int64_t, int64_t, int,
                          const Int8Epilogue&, char*, int64_t, int64_t);
  using ConvFn = void (*)(const Int8ConvArgs&, int64_t, const uint8_t* const*, char* const*,
                          const int8_t*, int64_t, int64_t, int, int64_t);
  static constexpr GemmFn gemm[kMR + 1] = {
      nullptr,
      gemm_tile<1, NP, KIND, SIGNED_A>,
      gemm_tile<2, NP, KIND, SIGNED_A>,
      gemm_tile<3, NP, KIND, SIGNED_A>,
      gemm_tile<4, NP, KIND, SIGNED_A>,
      gemm_tile<5, NP, KIND, SIGNED_A>,
      gemm_tile<6, NP, KIND, SIGNED_A>};
  static constexpr ConvFn conv[kMR + 1] = {
      nullptr,                  conv_tile<1, NP, KIND>, conv_tile<2, NP, KIND>,
      conv_tile<3, NP, KIND>,   conv_tile<4, NP, KIND>, conv_tile<5, NP, KIND>,
      conv_tile<6, NP, KIND>};
};

template <Int8OutKind KIND, bool SIGNED_A>
void gemm(const Int8GemmArgs& args) {
  const Int8GemmShape s = args.shape;
  const int64_t stride = panel_bytes(s.K);
  const int8_t* packed = static_cast<const int8_t*>(args.packed_b);
  char* c = static_cast<char*>(args.c);
  const int64_t row_bytes = args.ldc * out_bytes(KIND);
  const auto no_setup = [](int64_t, int64_t) { return 0; };
  for_each_tile<kMR, kMC, kNCP>(s.M, s.N, kPanelCols, 1, no_setup,
                                [&](int, int64_t, int64_t m, int rows, int64_t p, int np,
                                    int64_t n0, int cols) {
    const auto fn = np == 2 ? Tiles<KIND, 2, SIGNED_A>::gemm[rows]
                            : Tiles<KIND, 1, SIGNED_A>::gemm[rows];
    fn(args.a + m * args.lda, args.lda, packed + p * stride, stride, s.K, n0, cols, args.epi,
       c + m * row_bytes, row_bytes, m);
  });
}

template <Int8OutKind KIND>
void conv(const Int8ConvArgs& args) {
  const int64_t K = args.num_segments * args.segment_len, stride = panel_bytes(K);
  const int64_t M = args.N * args.OH * args.OW;
  const int64_t out_pixel_bytes = args.groups * args.ocg * out_bytes(KIND);
  for (int64_t grp = 0; grp < args.groups; ++grp) {
    const int8_t* packed = static_cast<const int8_t*>(args.packed_b) + grp * args.group_bytes;
    const auto setup = [&](int64_t m_begin, int64_t m_end) {
      return conv_task_rows<uint8_t, kMC>(args.src, args.Hs, args.Ws, args.Cs, args.OH, args.OW,
                                          args.stride_h, args.stride_w, grp * args.cg4, m_begin,
                                          m_end);
    };
    for_each_tile<kMR, kMC, kNCP>(
        M, args.ocg, kPanelCols, 1, setup,
        [&](const ConvTaskRows<uint8_t, kMC>& t, int64_t, int64_t m, int rows, int64_t p, int np,
            int64_t n0, int cols) {
          char* c_rows[kMR];
          for (int r = 0; r < rows; ++r) {
            c_rows[r] = static_cast<char*>(args.out) + (m + r) * out_pixel_bytes;
          }
          const auto fn = np == 2 ? Tiles<KIND, 2>::conv[rows] : Tiles<KIND, 1>::conv[rows];
          fn(args, grp, t.base + (m - t.first), c_rows, packed + p * stride, stride, n0, cols,
             m);
        });
  }
}

template <bool SIGNED_A>
void gemm_any_kind(const Int8GemmArgs& args) {
  with_out_kind(args.epi.kind, [&](auto kind) {
    using K = decltype(kind);
    gemm<K::value, SIGNED_A>(args);
  });
}

}  // namespace

size_t int8_packed_b_bytes(int64_t K, int64_t N) {
  return static_cast<size_t>(num_panels(N) * panel_bytes(K));
}

void int8_pack_b(const int8_t* b, int64_t ldb, int64_t K, int64_t N, void* packed) {
  int8_t* dst = static_cast<int8_t*>(packed);
  const int64_t kq_count = k_quads(K);
  for (int64_t p = 0; p < num_panels(N); ++p, dst += panel_bytes(K)) {
    for (int64_t kq = 0; kq < kq_count; ++kq) {
      for (int j = 0; j < kPanelCols; ++j) {
        // Column j of vector j/16 holds b[4kq .. 4kq+3][n] in its four bytes.
        int8_t* lane = dst + kq * 128 + (j / 16) * 64 + (j % 16) * 4;
        const int64_t n = p * kPanelCols + j;
        for (int i = 0; i < 4; ++i) {
          const int64_t k = 4 * kq + i;
          lane[i] = (n < N && k < K) ? b[k * ldb + n] : 0;
        }
      }
    }
  }
}

void int8_repack_conv_rows(const void* packed, int64_t KH, int64_t KW, int64_t C, int64_t N,
                           int64_t stack, int64_t Lq, void* out) {
  const int64_t c4 = (C + 3) / 4 * 4, K = (KH + stack - 1) / stack * Lq;
  const int64_t in_stride = panel_bytes(KH * KW * c4), out_stride = panel_bytes(K);
  const int8_t* src = static_cast<const int8_t*>(packed);
  int8_t* dst = static_cast<int8_t*>(out);
  for (int64_t p = 0; p < num_panels(N); ++p, src += in_stride, dst += out_stride) {
    for (int64_t k = 0; k < K; ++k) {
      // Byte k % 4 of quad k / 4 in every column comes from byte ok % 4 of quad ok / 4.
      int8_t* __restrict d = dst + (k / 4) * 128 + k % 4;
      const int64_t ok = conv_rows_source(k, KH, KW, C, stack, Lq);
      if (ok < 0) {
        for (int j = 0; j < kPanelCols; ++j) d[4 * j] = 0;
        continue;
      }
      const int8_t* __restrict s = src + (ok / 4) * 128 + ok % 4;
      for (int j = 0; j < kPanelCols; ++j) d[4 * j] = s[4 * j];
    }
  }
}

void int8_gemm(const Int8GemmArgs& args) {
  if (args.a_signed) return gemm_any_kind<true>(args);
  gemm_any_kind<false>(args);
}

void int8_conv(const Int8ConvArgs& args) {
  with_out_kind(args.epi.kind, [&](auto kind) {
    using K = decltype(kind);
    conv<K::value>(args);
  });
}

}  // namespace avx512_vnni
}  // namespace pyfastcnn
