// FP32 convolution for AVX2+FMA as an implicit GEMM (see F32ConvArgs and the AVX-512 version):
// panels of 16 output channels ([K][16] floats, two ymm per k), 6 x 16 register tiles (12 ymm
// accumulators of the 16 registers), k-blocking, bias + clamp fused. The block-sparse kernel
// runs the same tile over the kept rows of 32-column block panels.
#include <immintrin.h>

#include "../tile_loop.h"
#include "epilogue_avx2.h"
#include "pyfastcnn/kernels.h"

namespace pyfastcnn {
namespace avx2 {
namespace {

constexpr int kPanelCols = 16;
constexpr int kMR = 6;
constexpr int64_t kMC = 96;
constexpr int64_t kNCP = 8;

int64_t num_panels(int64_t N) { return (N + kPanelCols - 1) / kPanelCols; }

__m256i lane_mask(int valid) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Named accumulators (see the INT8 VNNI kernel for why not an array).
#define PYFASTCNN_FMA_ROW(r)                                 \
  if constexpr (MR > r) {                                    \
    const __m256 av = _mm256_broadcast_ss(a##r + k);         \
    c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);              \
    c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);              \
  }
#define PYFASTCNN_ROW_BASE(r) const float* base##r = rows[MR > r ? r : 0];
#define PYFASTCNN_ROW_SEGMENT(r) const float* a##r = base##r + offset;
#define PYFASTCNN_ROW_ACC(r) \
  __m256 c##r##0 = acc[MR > r ? r : 0][0], c##r##1 = acc[MR > r ? r : 0][1];
#define PYFASTCNN_FOR_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

template <int MR>
void dot_tile(const float* const* rows, const int64_t* seg_offset, const int64_t* seg_len,
              int64_t seg_begin, int64_t seg_end, const float* panel, __m256 acc[][2]) {
  PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_BASE)
  PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_ACC)
  const float* bp = panel;
  for (int64_t s = seg_begin; s < seg_end; ++s) {
    const int64_t offset = seg_offset[s], len = seg_len[s];
    PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_SEGMENT)
    for (int64_t k = 0; k < len; ++k, bp += kPanelCols) {
      const __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
      PYFASTCNN_FOR_ROWS(PYFASTCNN_FMA_ROW)
    }
  }
  const __m256 all[6][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                            {c30, c31}, {c40, c41}, {c50, c51}};
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = all[r][0];
    acc[r][1] = all[r][1];
  }
}
#undef PYFASTCNN_FOR_ROWS
#undef PYFASTCNN_ROW_ACC
#undef PYFASTCNN_ROW_SEGMENT
#undef PYFASTCNN_ROW_BASE
#undef PYFASTCNN_FMA_ROW

// One k-block of an MR x 16 tile (partial sums wait in `out` between blocks).
template <int MR>
void conv_tile(const F32ConvArgs& g, int64_t kb, const float* const* base, float* out,
               int64_t out_ld, const float* panel, int64_t n_global, int cols) {
  const bool first = kb == 0, last = kb + 1 == g.num_blocks;
  const __m256i mask[2] = {lane_mask(cols), lane_mask(cols - 8)};
  __m256 acc[MR][2];
  for (int v = 0; v < 2; ++v) {
    for (int r = 0; r < MR; ++r) {
      acc[r][v] = first ? _mm256_setzero_ps()
                        : _mm256_maskload_ps(out + r * out_ld + 8 * v, mask[v]);
    }
  }
  int64_t k_before = 0;
  for (int64_t s = 0; s < g.block_begin[kb]; ++s) k_before += g.segment_len[s];
  dot_tile<MR>(base, g.segment_offset, g.segment_len, g.block_begin[kb], g.block_begin[kb + 1],
               panel + k_before * kPanelCols, acc);
  const Epilogue256 epi(g.clamp_min, g.clamp_max);
  for (int v = 0; v < 2; ++v) {
    const __m256 bias = Epilogue256::load_bias(g.bias, n_global + 8 * v, mask[v]);
    for (int r = 0; r < MR; ++r) {
      __m256 y = acc[r][v];
      if (last) y = epi.apply(y, bias);
      store_lanes(out + r * out_ld + 8 * v, y, cols - 8 * v);
    }
  }
}

using TileFn = void (*)(const F32ConvArgs&, int64_t, const float* const*, float*, int64_t,
                        const float*, int64_t, int);
constexpr TileFn kTiles[kMR + 1] = {nullptr,      conv_tile<1>, conv_tile<2>, conv_tile<3>,
                                    conv_tile<4>, conv_tile<5>, conv_tile<6>};

// Block-sparse: the kept rows of one 32-column block panel, each at its own source offset, for
// 16 of its columns (`half` 0 or 1): the dense kernel's 6 x 16 tile and its 2 FMAs per
// broadcast, over the kept rows only. (A 3 x 32 tile, 4 FMAs per broadcast, needs 17 ymm
// registers: it spilled and ran 20% slower at 90% on Zen 3.)
#define PYFASTCNN_SPARSE_ROW(r)                              \
  if constexpr (MR > r) {                                    \
    const __m256 av = _mm256_broadcast_ss(base##r + off);    \
    c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);              \
    c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);              \
  }
#define PYFASTCNN_ROW_BASE(r) const float* base##r = base[MR > r ? r : 0];
#define PYFASTCNN_ROW_ACC(r) __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = c##r##0;
#define PYFASTCNN_FOR_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

template <int MR>
void block_sparse_tile(const F32BlockSparseArgs& g, const float* const* base, float* out,
                       int64_t out_ld, int64_t panel, int half, int64_t n_global, int cols) {
  PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_BASE)
  PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_ACC)
  const float* rows = g.rows + half * kPanelCols;
  for (int64_t j = g.panel_row_ptr[panel]; j < g.panel_row_ptr[panel + 1]; ++j) {
    const int64_t off = g.row_offset[j];
    const float* row = rows + j * kSparseBlockCols;
    const __m256 b0 = _mm256_loadu_ps(row), b1 = _mm256_loadu_ps(row + 8);
    PYFASTCNN_FOR_ROWS(PYFASTCNN_SPARSE_ROW)
  }
  const __m256 acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                            {c30, c31}, {c40, c41}, {c50, c51}};
  const Epilogue256 epi(g.clamp_min, g.clamp_max);
  for (int v = 0; v < 2; ++v) {
    const __m256i mask = lane_mask(cols - 8 * v);
    const __m256 bias = Epilogue256::load_bias(g.bias, n_global + 8 * v, mask);
    for (int r = 0; r < MR; ++r) {
      store_lanes(out + r * out_ld + 8 * v, epi.apply(acc[r][v], bias), cols - 8 * v);
    }
  }
}
#undef PYFASTCNN_FOR_ROWS
#undef PYFASTCNN_ROW_ACC
#undef PYFASTCNN_ROW_BASE
#undef PYFASTCNN_SPARSE_ROW

using BlockSparseTileFn = void (*)(const F32BlockSparseArgs&, const float* const*, float*,
                                   int64_t, int64_t, int, int64_t, int);
constexpr BlockSparseTileFn kBlockSparseTiles[kMR + 1] = {
    nullptr,              block_sparse_tile<1>, block_sparse_tile<2>, block_sparse_tile<3>,
    block_sparse_tile<4>, block_sparse_tile<5>, block_sparse_tile<6>};

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
          for (int i = 0; i < np; ++i) {  // 16 ymm registers: one panel per tile
            const int panel_cols = cols - i * kPanelCols < kPanelCols
                                       ? cols - i * kPanelCols
                                       : kPanelCols;
            const int64_t n = n0 + i * kPanelCols;
            kTiles[rows](args, kb, t.base + (m - t.first), args.out + m * OC + grp * args.ocg + n,
                         OC, packed + (p + i) * stride, grp * args.ocg + n, panel_cols);
          }
        });
  }
}

void conv2d_f32_block_sparse(const F32BlockSparseArgs& args) {
  static_assert(kSparseBlockCols == 2 * kPanelCols, "a block panel is two register panels");
  const int64_t M = args.N * args.OH * args.OW, OC = args.groups * args.ocg;
  const int64_t panels = (args.ocg + kSparseBlockCols - 1) / kSparseBlockCols;
  for (int64_t grp = 0; grp < args.groups; ++grp) {
    const auto setup = [&](int64_t m_begin, int64_t m_end) {
      return conv_task_rows<float, kMC>(args.src, args.Hs, args.Ws, args.Cs, args.OH, args.OW,
                                        args.stride_h, args.stride_w, grp * args.cg, m_begin,
                                        m_end);
    };
    for_each_tile<kMR, kMC, kNCP>(
        M, args.ocg, kSparseBlockCols, 1, setup,
        [&](const ConvTaskRows<float, kMC>& t, int64_t, int64_t m, int rows, int64_t p, int np,
            int64_t n0, int cols) {
          for (int i = 0; i < 2 * np; ++i) {  // each block panel keeps its own rows
            const int left = cols - i * kPanelCols;
            if (left <= 0) break;
            const int64_t n = n0 + i * kPanelCols;
            kBlockSparseTiles[rows](args, t.base + (m - t.first),
                                    args.out + m * OC + grp * args.ocg + n, OC,
                                    grp * panels + p + i / 2, i % 2, grp * args.ocg + n,
                                    left < kPanelCols ? left : kPanelCols);
          }
        });
  }
}

}  // namespace avx2
}  // namespace pyfastcnn
