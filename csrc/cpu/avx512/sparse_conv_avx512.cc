// Sparse (pruned-weight) convolution for AVX-512 over virtual output planes (see
// SparsePlanesArgs). A task owns up to 128 consecutive virtual pixels of one image for every
// output channel: each non-zero weight is one broadcast and up to eight contiguous 16-pixel
// loads + FMAs (8 rather than 4: 8% faster at 1 thread, the scalar work per non-zero shared by
// twice the FMAs), so work is proportional to the non-zeros; slice by slice of the input channels, so the
// window the loads hit stays in L1 (the whole window, in L2, held 3x3 layers to 10-20% of the
// FMA peak). Bias and clamp (ReLU) are applied before the store, which writes the output pixels
// straight to the output tensor (a virtual-plane buffer copied afterwards cost a quarter of the
// time of the 7x7 stem at batch 8).
// GCC 12 warns that _mm512_undefined_*() in its own headers is uninitialized (fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/memory.h"
#include "../tile_loop.h"
#include "epilogue_avx512.h"

namespace pyfastcnn {
namespace avx512 {
namespace {

constexpr int64_t kTile = 128;  // virtual pixels per task: up to 8 zmm accumulators
static_assert(kTile <= kSparseWindowLd, "a tile's pixels fill one window row");

__mmask16 lane_mask(int64_t valid) {
  return valid >= 16 ? static_cast<__mmask16>(0xFFFF)
                     : (valid <= 0 ? 0 : static_cast<__mmask16>((1u << valid) - 1));
}

// NV vectors of 16 virtual pixels (the last one `last`-masked when MASKED: short tiles of the
// last row read no further than the input).
template <int NV, bool MASKED>
void tile(const SparsePlanesArgs& a, int64_t n, int64_t q0, int64_t oc_begin, int64_t oc_end) {
  const int64_t len = a.q_count - q0 < kTile ? a.q_count - q0 : kTile;
  const __mmask16 last = lane_mask(len - 16 * (NV - 1));
  const Epilogue512 epi(a.clamp_min, a.clamp_max);
  // Window mode: each slice's channels of the tile's pixels, transposed into `window`.
  float* window = window_buffer(a);
  const float* base = window ? window : a.src + n * a.image_stride + q0;
  const int64_t* os = a.out_strides;
  float* out = a.out + n * os[0];
  // With NCHW rows (the fast layout) the output pixels among a vector's lanes are consecutive in
  // the output: they are compressed to the low lanes and stored at keep_at[k]. (Copying lanes
  // through a stack buffer instead stalled on store forwarding: +30% at 64-64-56.)
  const bool rows = os[3] == 1 && os[2] == a.OW;
  __mmask16 keep[NV];
  int64_t keep_at[NV];
  for (int k = 0; k < NV; ++k) {
    keep[k] = 0;
    keep_at[k] = -1;
    for (int64_t l = 0; l < 16; ++l) {
      const int64_t q = q0 + 16 * k + l, ow = q % a.Wq;
      if (q >= a.q_count || ow >= a.OW) continue;
      keep[k] = static_cast<__mmask16>(keep[k] | (1u << l));
      if (keep_at[k] < 0) keep_at[k] = (q / a.Wq) * a.OW + ow;
    }
  }
  const PlaneRuns runs(q0, rows ? 0 : len, a.Wq, a.OW, os[2], os[3]);
  // Channels innermost (channels_last): the final sums wait in the buffer, channel by channel,
  // and are transposed into the output's pixels at the end of the task (stored one float at a
  // time, a pixel apart, every store missed L1: a 1x1 64-256-56 layer at batch 8 ran 4.5x
  // slower than with NCHW output).
  const bool pixels = !rows && os[1] == 1;
  float* partial = a.slices > 1 || pixels ? static_cast<float*>(scratch(
                                      ScratchSlot::columns,
                                      static_cast<size_t>((oc_end - oc_begin) * kTile * 4)))
                                : nullptr;
  for (int64_t j = 0; j < a.slices; ++j) {
    const int64_t* first = a.bounds + j * a.OC;
    const int64_t* stop = first + a.OC;
    if (window) fill_window(a, n, q0, len, j, window, transpose_f32);
    for (int64_t oc = oc_begin; oc < oc_end; ++oc) {
      float* sums = partial + (oc - oc_begin) * kTile;
      __m512 c[NV];
      for (int k = 0; k < NV; ++k) {  // zero, or the partial sums of the slices before
        c[k] = j > 0 ? _mm512_load_ps(sums + 16 * k) : _mm512_setzero_ps();
      }
      for (int64_t i = first[oc]; i < stop[oc]; ++i) {
        const float* p = base + a.offset[i];
        const __m512 v = _mm512_set1_ps(a.values[i]);
        for (int k = 0; k < NV; ++k) {
          const __m512 x = (MASKED && k == NV - 1) ? _mm512_maskz_loadu_ps(last, p + 16 * k)
                                                   : _mm512_loadu_ps(p + 16 * k);
          c[k] = _mm512_fmadd_ps(v, x, c[k]);
        }
      }
      if (j + 1 < a.slices) {
        for (int k = 0; k < NV; ++k) _mm512_store_ps(sums + 16 * k, c[k]);
        continue;
      }
      const __m512 bias = Epilogue512::broadcast_bias(a.bias, oc);
      for (int k = 0; k < NV; ++k) c[k] = epi.apply(c[k], bias);
      float* o = out + oc * os[1];
      if (rows) {
        for (int k = 0; k < NV; ++k) {
          const int kept = __builtin_popcount(keep[k]);
          _mm512_mask_storeu_ps(o + keep_at[k], lane_mask(kept),
                                _mm512_maskz_compress_ps(keep[k], c[k]));
        }
        continue;
      }
      if (pixels) {
        for (int k = 0; k < NV; ++k) _mm512_store_ps(sums + 16 * k, c[k]);
        continue;
      }
      alignas(64) float lanes[kTile];
      for (int k = 0; k < NV; ++k) _mm512_store_ps(lanes + 16 * k, c[k]);
      runs.store_strided(lanes, o, os[3]);
    }
  }
  for (int r = 0; pixels && r < runs.n; ++r) {
    transpose_f32(TransposeF32Args{partial + runs.lane[r], out + runs.offset[r] + oc_begin,
                                   oc_end - oc_begin, runs.count[r], kTile, os[3]});
  }
}

}  // namespace

void sparse_conv_planes(const SparsePlanesArgs& a) {
  for_each_pixel_tile(a.N, a.q_count, kTile, a.OC,
                      [&](int64_t n, int64_t q0, int64_t oc_begin, int64_t oc_end) {
                        const int64_t len = a.q_count - q0 < kTile ? a.q_count - q0 : kTile;
                        using TileFn = void (*)(const SparsePlanesArgs&, int64_t, int64_t,
                                                int64_t, int64_t);
                        static constexpr TileFn kTiles[2][9] = {
                            {nullptr, tile<1, false>, tile<2, false>, tile<3, false>,
                             tile<4, false>, tile<5, false>, tile<6, false>, tile<7, false>,
                             tile<8, false>},
                            {nullptr, tile<1, true>, tile<2, true>, tile<3, true>, tile<4, true>,
                             tile<5, true>, tile<6, true>, tile<7, true>, tile<8, true>}};
                        kTiles[len % 16 != 0][(len + 15) / 16](a, n, q0, oc_begin, oc_end);
                      },
                      a.window_channels ? 2 : 8);  // output-channel chunks fill the window again
}

}  // namespace avx512
}  // namespace pyfastcnn
