// FP32 convolution for AVX-512 as an implicit GEMM with bias + clamp (ReLU) fused.
//
// B (the weights, [K, N] with K ordered (kh, kw, c)) is packed into panels of 32 output
// channels, [K][32] floats: two zmm per k. A 6 x 64 (or 6 x 32) tile keeps 24 (12) named
// accumulators in registers; each k broadcasts one input float per row and issues 4 (2) FMAs
// per row. Rows are read straight from the zero-padded NHWC source through the segment list
// (see F32ConvArgs), so there is no im2col.
// GCC 12 warns that _mm512_undefined_*() in its own headers is uninitialized (fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "../tile_loop.h"
#include "epilogue_avx512.h"
#include "pyfastcnn/kernels.h"

namespace pyfastcnn {
namespace avx512 {
namespace {

constexpr int kPanelCols = 32;
constexpr int kMR = 6;
constexpr int64_t kMC = 96;
constexpr int64_t kNCP = 8;

int64_t num_panels(int64_t N) { return (N + kPanelCols - 1) / kPanelCols; }

__mmask16 lane_mask(int valid) {
  return valid >= 16 ? static_cast<__mmask16>(0xFFFF)
                     : (valid <= 0 ? 0 : static_cast<__mmask16>((1u << valid) - 1));
}

// acc[r] += rows[r] . panels over all segments. Named accumulators: see int8 VNNI kernel.
#define PYFASTCNN_FMA_ROW(r)                                         \
  if constexpr (MR > r) {                                            \
    const __m512 av = _mm512_set1_ps(a##r[k]);                       \
    c##r##0 = _mm512_fmadd_ps(av, b0, c##r##0);                      \
    c##r##1 = _mm512_fmadd_ps(av, b1, c##r##1);                      \
    if constexpr (NP == 2) {                                         \
      c##r##2 = _mm512_fmadd_ps(av, b2, c##r##2);                    \
      c##r##3 = _mm512_fmadd_ps(av, b3, c##r##3);                    \
    }                                                                \
  }
#define PYFASTCNN_ROW_BASE(r) const float* base##r = rows[MR > r ? r : 0];
#define PYFASTCNN_ROW_SEGMENT(r) const float* a##r = base##r + offset;
#define PYFASTCNN_ROW_ACC(r)                                                          \
  __m512 c##r##0 = acc[MR > r ? r : 0][0], c##r##1 = acc[MR > r ? r : 0][1],             \
         c##r##2 = acc[MR > r ? r : 0][NP == 2 ? 2 : 0], c##r##3 = acc[MR > r ? r : 0][NP == 2 ? 3 : 1];
#define PYFASTCNN_FOR_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

// Segments [seg_begin, seg_end); panel points at the packed row of the first one.
template <int MR, int NP>
void dot_tile(const float* const* rows, const int64_t* seg_offset, const int64_t* seg_len,
              int64_t seg_begin, int64_t seg_end, const float* panel, int64_t panel_stride,
              __m512 acc[][4]) {
  PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_BASE)
  PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_ACC)
  const float* bp = panel;
  for (int64_t s = seg_begin; s < seg_end; ++s) {
    const int64_t offset = seg_offset[s], len = seg_len[s];
    PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_SEGMENT)
    for (int64_t k = 0; k < len; ++k, bp += kPanelCols) {
      const __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
      __m512 b2 = b0, b3 = b1;
      if constexpr (NP == 2) {
        b2 = _mm512_load_ps(bp + panel_stride);
        b3 = _mm512_load_ps(bp + panel_stride + 16);
      }
      PYFASTCNN_FOR_ROWS(PYFASTCNN_FMA_ROW)
    }
  }
  const __m512 all[6][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13},
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
#undef PYFASTCNN_FMA_ROW

// One k-block of an MR x (32 * NP) tile. The first block starts from zero, later ones from the
// partial sums stored in `out`; the last one applies bias and clamp.
template <int MR, int NP>
void conv_tile(const F32ConvArgs& g, int64_t kb, const float* const* base, float* out,
               int64_t out_ld, const float* panel, int64_t panel_stride, int64_t n_global,
               int cols) {
  const bool first = kb == 0, last = kb + 1 == g.num_blocks;
  __m512 acc[MR][4];
  for (int v = 0; v < 2 * NP; ++v) {
    const __mmask16 mask = lane_mask(cols - 16 * v);
    for (int r = 0; r < MR; ++r) {
      acc[r][v] = first ? _mm512_setzero_ps()
                        : _mm512_maskz_loadu_ps(mask, out + r * out_ld + 16 * v);
    }
  }
  int64_t k_before = 0;  // packed rows of the blocks before this one
  for (int64_t s = 0; s < g.block_begin[kb]; ++s) k_before += g.segment_len[s];
  dot_tile<MR, NP>(base, g.segment_offset, g.segment_len, g.block_begin[kb],
                   g.block_begin[kb + 1], panel + k_before * kPanelCols, panel_stride, acc);
  const Epilogue512 epi(g.clamp_min, g.clamp_max);
  for (int v = 0; v < 2 * NP; ++v) {
    const __mmask16 mask = lane_mask(cols - 16 * v);
    if (!last) {
      for (int r = 0; r < MR; ++r) _mm512_mask_storeu_ps(out + r * out_ld + 16 * v, mask, acc[r][v]);
      continue;
    }
    const __m512 bias = Epilogue512::load_bias(g.bias, n_global + 16 * v, mask);
    for (int r = 0; r < MR; ++r) {
      _mm512_mask_storeu_ps(out + r * out_ld + 16 * v, mask, epi.apply(acc[r][v], bias));
    }
  }
}

// Block-sparse: the kept rows of one panel, each at its own source offset.
#define PYFASTCNN_SPARSE_ROW(r)                                      \
  if constexpr (MR > r) {                                            \
    const __m512 av = _mm512_set1_ps(base##r[off]);                  \
    c##r##0 = _mm512_fmadd_ps(av, b0, c##r##0);                      \
    c##r##1 = _mm512_fmadd_ps(av, b1, c##r##1);                      \
  }
#define PYFASTCNN_ROW_BASE(r) const float* base##r = base[MR > r ? r : 0];
#define PYFASTCNN_ROW_ACC(r) __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = c##r##0;
#define PYFASTCNN_FOR_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

template <int MR>
void block_sparse_tile(const F32BlockSparseArgs& g, const float* const* base, float* out,
                       int64_t out_ld, int64_t panel, int64_t n_global, int cols) {
  PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_BASE)
  PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_ACC)
  for (int64_t j = g.panel_row_ptr[panel]; j < g.panel_row_ptr[panel + 1]; ++j) {
    const int64_t off = g.row_offset[j];
    const float* row = g.rows + j * kSparseBlockCols;
    const __m512 b0 = _mm512_loadu_ps(row), b1 = _mm512_loadu_ps(row + 16);
    PYFASTCNN_FOR_ROWS(PYFASTCNN_SPARSE_ROW)
  }
  const __m512 acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                            {c30, c31}, {c40, c41}, {c50, c51}};
  const Epilogue512 epi(g.clamp_min, g.clamp_max);
  for (int v = 0; v < 2; ++v) {
    const __mmask16 mask = lane_mask(cols - 16 * v);
    const __m512 bias = Epilogue512::load_bias(g.bias, n_global + 16 * v, mask);
    for (int r = 0; r < MR; ++r) {
      _mm512_mask_storeu_ps(out + r * out_ld + 16 * v, mask, epi.apply(acc[r][v], bias));
    }
  }
}
#undef PYFASTCNN_FOR_ROWS
#undef PYFASTCNN_ROW_ACC
#undef PYFASTCNN_ROW_BASE
#undef PYFASTCNN_SPARSE_ROW

using BlockSparseTileFn = void (*)(const F32BlockSparseArgs&, const float* const*, float*,
                                   int64_t, int64_t, int64_t, int);
constexpr BlockSparseTileFn kBlockSparseTiles[kMR + 1] = {
    nullptr,                 block_sparse_tile<1>, block_sparse_tile<2>, block_sparse_tile<3>,
    block_sparse_tile<4>,    block_sparse_tile<5>, block_sparse_tile<6>};

template <int NP>
struct Tiles {
  using Fn = void (*)(const F32ConvArgs&, int64_t, const float* const*, float*, int64_t,
                      const float*, int64_t, int64_t, int);
  static constexpr Fn by_rows[kMR + 1] = {nullptr,          conv_tile<1, NP>, conv_tile<2, NP>,
                                          conv_tile<3, NP>, conv_tile<4, NP>, conv_tile<5, NP>,
                                          conv_tile<6, NP>};
};

}  // namespace

size_t f32_packed_floats(int64_t K, int64_t N) {
  return static_cast<size_t>(num_panels(N) * K * kPanelCols);
}

void f32_pack_b(const float* b, int64_t ldb, int64_t K, int64_t N, float* packed) {
  for (int64_t p = 0; p < num_panels(N); ++p) {
    float* panel = packed + p * K * kPanelCols;
    for (int64_t k = 0; k < K; ++k) {
      for (int j = 0; j < kPanelCols; ++j) {
        const int64_t n = p * kPanelCols + j;
        panel[k * kPanelCols + j] = n < N ? b[k * ldb + n] : 0.0f;
      }
    }
  }
}

void conv2d_f32(const F32ConvArgs& args) {
  int64_t K = 0;
  for (int64_t s = 0; s < args.num_segments; ++s) K += args.segment_len[s];
  const int64_t stride = K * kPanelCols;
  const int64_t M = args.N * args.OH * args.OW, OC = args.groups * args.ocg;
  for (int64_t grp = 0; grp < args.groups; ++grp) {
    const float* packed = args.packed_b + grp * args.group_floats;
    const auto setup = [&](int64_t m_begin, int64_t m_end) {
      return conv_task_rows<float, kMC>(args.src, args.Hs, args.Ws, args.Cs, args.OH, args.OW,
                                        args.stride_h, args.stride_w, grp * args.cg, m_begin,
                                        m_end);
    };
    for_each_tile<kMR, kMC, kNCP>(
        M, args.ocg, kPanelCols, args.num_blocks, setup,
        [&](const ConvTaskRows<float, kMC>& t, int64_t kb, int64_t m, int rows, int64_t p,
            int np, int64_t n0, int cols) {
          const auto fn = np == 2 ? Tiles<2>::by_rows[rows] : Tiles<1>::by_rows[rows];
          fn(args, kb, t.base + (m - t.first), args.out + m * OC + grp * args.ocg + n0, OC,
             packed + p * stride, stride, grp * args.ocg + n0, cols);
        });
  }
}

void conv2d_f32_block_sparse(const F32BlockSparseArgs& args) {
  static_assert(kSparseBlockCols == kPanelCols, "block rows are panel rows");
  const int64_t M = args.N * args.OH * args.OW, OC = args.groups * args.ocg;
  const int64_t panels = num_panels(args.ocg);
  for (int64_t grp = 0; grp < args.groups; ++grp) {
    const auto setup = [&](int64_t m_begin, int64_t m_end) {
      return conv_task_rows<float, kMC>(args.src, args.Hs, args.Ws, args.Cs, args.OH, args.OW,
                                        args.stride_h, args.stride_w, grp * args.cg, m_begin,
                                        m_end);
    };
    for_each_tile<kMR, kMC, kNCP>(
        M, args.ocg, kPanelCols, 1, setup,
        [&](const ConvTaskRows<float, kMC>& t, int64_t, int64_t m, int rows, int64_t p, int np,
            int64_t n0, int cols) {
          for (int i = 0; i < np; ++i) {  // each panel keeps its own rows
            const int panel_cols = cols - i * kPanelCols < kPanelCols
                                       ? cols - i * static_cast<int>(kPanelCols)
                                       : static_cast<int>(kPanelCols);
            const int64_t n = n0 + i * kPanelCols;
            kBlockSparseTiles[rows](args, t.base + (m - t.first),
                                    args.out + m * OC + grp * args.ocg + n, OC,
                                    grp * panels + p + i, grp * args.ocg + n, panel_cols);
          }
        });
  }
}

}  // namespace avx512
}  // namespace pyfastcnn
