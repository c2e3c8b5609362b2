// BF16 convolution for AVX-512 BF16 as an implicit GEMM (see Bf16ConvArgs): vdpbf16ps multiplies
// pairs of bfloat16 along the reduction and accumulates in FP32. B is packed into panels of 32
// output channels, [K/2][32][2] bf16 (two zmm per pair), A pairs are broadcast as 32-bit words;
// 6 x 64 (or 6 x 32) register tiles, k-blocking and the bias + clamp epilogue as in FP32.
// GCC 12 warns that _mm512_undefined_*() in its own headers is uninitialized (fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "../bf16.h"
#include "../tile_loop.h"
#include "epilogue_avx512.h"
#include "pyfastcnn/kernels.h"

namespace pyfastcnn {
namespace avx512_bf16 {
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

__m512bh as_bh(__m512i v) { return reinterpret_cast<__m512bh&>(v); }

int32_t pair_at(const uint16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

#define PYFASTCNN_DP_ROW(r)                                                   \
  if constexpr (MR > r) {                                                     \
    const __m512bh av = as_bh(_mm512_set1_epi32(pair_at(a##r + 2 * kp)));    \
    c##r##0 = _mm512_dpbf16_ps(c##r##0, av, b0);                              \
    c##r##1 = _mm512_dpbf16_ps(c##r##1, av, b1);                              \
    if constexpr (NP == 2) {                                                  \
      c##r##2 = _mm512_dpbf16_ps(c##r##2, av, b2);                            \
      c##r##3 = _mm512_dpbf16_ps(c##r##3, av, b3);                            \
    }                                                                         \
  }
#define PYFASTCNN_ROW_BASE(r) const uint16_t* base##r = rows[MR > r ? r : 0];
#define PYFASTCNN_ROW_SEGMENT(r) const uint16_t* a##r = base##r + offset;
#define PYFASTCNN_ROW_ACC(r)                                                            \
  __m512 c##r##0 = acc[MR > r ? r : 0][0], c##r##1 = acc[MR > r ? r : 0][1],               \
         c##r##2 = acc[MR > r ? r : 0][NP == 2 ? 2 : 0], c##r##3 = acc[MR > r ? r : 0][NP == 2 ? 3 : 1];
#define PYFASTCNN_FOR_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

// Named accumulators: see the INT8 VNNI kernel for why not an array.
template <int MR, int NP>
void dot_tile(const uint16_t* const* rows, const int64_t* seg_offset, const int64_t* seg_len,
              int64_t seg_begin, int64_t seg_end, const uint16_t* panel, int64_t panel_stride,
              __m512 acc[][4]) {
  PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_BASE)
  PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_ACC)
  const uint16_t* bp = panel;
  for (int64_t s = seg_begin; s < seg_end; ++s) {
    const int64_t offset = seg_offset[s], pairs = seg_len[s] / 2;
    PYFASTCNN_FOR_ROWS(PYFASTCNN_ROW_SEGMENT)
    for (int64_t kp = 0; kp < pairs; ++kp, bp += 2 * kPanelCols) {
      const __m512bh b0 = as_bh(_mm512_load_si512(bp)), b1 = as_bh(_mm512_load_si512(bp + 32));
      __m512bh b2 = b0, b3 = b1;
      if constexpr (NP == 2) {
        b2 = as_bh(_mm512_load_si512(bp + panel_stride));
        b3 = as_bh(_mm512_load_si512(bp + panel_stride + 32));
      }
      PYFASTCNN_FOR_ROWS(PYFASTCNN_DP_ROW)
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
#undef PYFASTCNN_DP_ROW

template <int MR, int NP>
void conv_tile(const Bf16ConvArgs& g, int64_t kb, const uint16_t* const* base, float* out,
               int64_t out_ld, const uint16_t* panel, int64_t panel_stride, int64_t n_global,
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
  int64_t k_before = 0;
  for (int64_t s = 0; s < g.block_begin[kb]; ++s) k_before += g.segment_len[s];
  dot_tile<MR, NP>(base, g.segment_offset, g.segment_len, g.block_begin[kb],
                   g.block_begin[kb + 1], panel + k_before * kPanelCols, panel_stride, acc);
  const Epilogue512 epi(g.clamp_min, g.clamp_max);
  for (int v = 0; v < 2 * NP; ++v) {
    const __mmask16 mask = lane_mask(cols - 16 * v);
    // g.bias tested here too: without it GCC 12 unswitches this loop into 5% more code.
    const __m512 bias = g.bias && last ? Epilogue512::load_bias(g.bias, n_global + 16 * v, mask)
                                       : _mm512_setzero_ps();
    for (int r = 0; r < MR; ++r) {
      __m512 y = acc[r][v];
      if (last) y = epi.apply(y, bias);
      _mm512_mask_storeu_ps(out + r * out_ld + 16 * v, mask, y);
    }
  }
}

template <int NP>
struct Tiles {
  using Fn = void (*)(const Bf16ConvArgs&, int64_t, const uint16_t* const*, float*, int64_t,
                      const uint16_t*, int64_t, int64_t, int);
  static constexpr Fn by_rows[kMR + 1] = {nullptr,          conv_tile<1, NP>, conv_tile<2, NP>,
                                          conv_tile<3, NP>, conv_tile<4, NP>, conv_tile<5, NP>,
                                          conv_tile<6, NP>};
};

}  // namespace

void to_bf16_n(const float* src, int64_t n, uint16_t* dst) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), reinterpret_cast<const __m256i&>(v));
  }
  for (; i < n; ++i) dst[i] = to_bf16(src[i]);
}

size_t bf16_packed_elems(int64_t K, int64_t N) {
  return static_cast<size_t>(num_panels(N) * K * kPanelCols);
}

void bf16_pack_b(const float* b, int64_t ldb, int64_t K, int64_t N, uint16_t* packed) {
  for (int64_t p = 0; p < num_panels(N); ++p) {
    uint16_t* panel = packed + p * K * kPanelCols;
    for (int64_t kp = 0; kp < K / 2; ++kp) {
      for (int j = 0; j < kPanelCols; ++j) {
        // Lane j of vector j/16 holds the pair (b[2kp][n], b[2kp+1][n]).
        uint16_t* lane = panel + kp * 2 * kPanelCols + (j / 16) * 32 + (j % 16) * 2;
        const int64_t n = p * kPanelCols + j;
        lane[0] = n < N ? to_bf16(b[(2 * kp) * ldb + n]) : 0;
        lane[1] = n < N ? to_bf16(b[(2 * kp + 1) * ldb + n]) : 0;
      }
    }
  }
}

void conv2d_bf16(const Bf16ConvArgs& args) {
  int64_t K = 0;
  for (int64_t s = 0; s < args.num_segments; ++s) K += args.segment_len[s];
  const int64_t stride = K * kPanelCols;
  const int64_t M = args.N * args.OH * args.OW, OC = args.groups * args.ocg;
  for (int64_t grp = 0; grp < args.groups; ++grp) {
    const uint16_t* packed = args.packed_b + grp * args.group_elems;
    const auto setup = [&](int64_t m_begin, int64_t m_end) {
      return conv_task_rows<uint16_t, kMC>(args.src, args.Hs, args.Ws, args.Cs, args.OH,
                                           args.OW, args.stride_h, args.stride_w,
                                           grp * args.cg2, m_begin, m_end);
    };
    for_each_tile<kMR, kMC, kNCP>(
        M, args.ocg, kPanelCols, args.num_blocks, setup,
        [&](const ConvTaskRows<uint16_t, kMC>& t, int64_t kb, int64_t m, int rows, int64_t p,
            int np, int64_t n0, int cols) {
          const auto fn = np == 2 ? Tiles<2>::by_rows[rows] : Tiles<1>::by_rows[rows];
          fn(args, kb, t.base + (m - t.first), args.out + m * OC + grp * args.ocg + n0, OC,
             packed + p * stride, stride, grp * args.ocg + n0, cols);
        });
  }
}

}  // namespace avx512_bf16
}  // namespace pyfastcnn
