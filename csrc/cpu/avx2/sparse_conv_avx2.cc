// Sparse (pruned-weight) convolution for AVX2+FMA over virtual output planes: the AVX-512
// kernel's scheme (see SparsePlanesArgs and sparse_conv_avx512.cc) with up to 8 ymm
// accumulators per 64-pixel tile, slice by slice of the input channels.
#include <immintrin.h>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/memory.h"
#include "../tile_loop.h"
#include "epilogue_avx2.h"

namespace pyfastcnn {
namespace avx2 {
namespace {

constexpr int64_t kTile = 64;
static_assert(kTile <= kSparseWindowLd, "a tile's pixels fill one window row");

// NV vectors of 8 virtual pixels, the last one masked when MASKED (read no further than the
// input; a masked load in every tile cost 5% at 64-64-56).
template <int NV, bool MASKED>
void tile(const SparsePlanesArgs& a, int64_t n, int64_t q0, int64_t oc_begin, int64_t oc_end) {
  const int64_t len = a.q_count - q0 < kTile ? a.q_count - q0 : kTile;
  const __m256i last = _mm256_cmpgt_epi32(
      _mm256_set1_epi32(static_cast<int>(len - 8 * (NV - 1))), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const Epilogue256 epi(a.clamp_min, a.clamp_max);
  // Window mode: each slice's channels of the tile's pixels, transposed into `window`.
  float* window = window_buffer(a);
  const float* base = window ? window : a.src + n * a.image_stride + q0;
  const int64_t* os = a.out_strides;
  float* out = a.out + n * os[0];
  const bool direct = a.Wq == a.OW && os[3] == 1 && os[2] == a.OW;
  const PlaneRuns runs(q0, direct ? 0 : len, a.Wq, a.OW, os[2], os[3]);
  // Channels innermost (channels_last): final sums wait in the buffer and are transposed into
  // the output's pixels at the end of the task (as in the AVX-512 kernel).
  const bool pixels = !direct && os[1] == 1;
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
      __m256 c[NV];
      for (int k = 0; k < NV; ++k) {  // zero, or the partial sums of the slices before
        c[k] = j > 0 ? _mm256_load_ps(sums + 8 * k) : _mm256_setzero_ps();
      }
      for (int64_t i = first[oc]; i < stop[oc]; ++i) {
        const float* p = base + a.offset[i];
        const __m256 w = _mm256_set1_ps(a.values[i]);
        for (int k = 0; k < NV - 1; ++k) c[k] = _mm256_fmadd_ps(w, _mm256_loadu_ps(p + 8 * k), c[k]);
        const __m256 x = MASKED ? _mm256_maskload_ps(p + 8 * (NV - 1), last)
                                : _mm256_loadu_ps(p + 8 * (NV - 1));
        c[NV - 1] = _mm256_fmadd_ps(w, x, c[NV - 1]);
      }
      if (j + 1 < a.slices) {
        for (int k = 0; k < NV; ++k) _mm256_store_ps(sums + 8 * k, c[k]);
        continue;
      }
      const __m256 bias = Epilogue256::broadcast_bias(a.bias, oc);
      for (int k = 0; k < NV; ++k) c[k] = epi.apply(c[k], bias);
      float* o = out + oc * os[1];
      if (direct) {
        for (int k = 0; k < NV - 1; ++k) _mm256_storeu_ps(o + q0 + 8 * k, c[k]);
        store_lanes(o + q0 + 8 * (NV - 1), c[NV - 1], static_cast<int>(len - 8 * (NV - 1)));
        continue;
      }
      if (pixels) {
        for (int k = 0; k < NV; ++k) _mm256_store_ps(sums + 8 * k, c[k]);
        continue;
      }
      alignas(32) float lanes[kTile + 8];
      for (int k = 0; k < NV; ++k) _mm256_store_ps(lanes + 8 * k, c[k]);
      if (os[3] != 1) {
        runs.store_strided(lanes, o, os[3]);
        continue;
      }
      for (int r = 0; r < runs.n; ++r) {  // rows: 8 lanes at a time
        for (int i = 0; i < runs.count[r]; i += 8) {
          store_lanes(o + runs.offset[r] + i, _mm256_loadu_ps(lanes + runs.lane[r] + i),
                      runs.count[r] - i);
        }
      }
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
                        kTiles[len % 8 != 0][(len + 7) / 8](a, n, q0, oc_begin, oc_end);
                      },
                      a.window_channels ? 2 : 8);  // output-channel chunks fill the window again
}

}  // namespace avx2
}  // namespace pyfastcnn
