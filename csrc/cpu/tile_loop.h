// The task/tile loop shared by the register-tiled kernels (INT8 VNNI, FP32 AVX-512). Templates
// only, instantiated with lambdas from each ISA unit, so every instantiation is a distinct
// symbol compiled with that unit's flags.
#pragma once
#include <cstdint>
#include <cstring>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/memory.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {

// Runs tile(state, kb, m, rows, p, np, n0, cols) over an M x N problem cut into panels of
// `panel_cols` columns and `k_blocks` blocks of the reduction. Tasks of MC rows x NCP panels
// run in parallel; within a task the k-blocks are outermost, so a task's rows stay in L2 and a
// block of each panel is reused by every row tile. Tiles are MR rows and span two panels
// (np = 2) where the task has a pair, one otherwise. setup(m_begin, m_end) runs once per task
// and returns the task's state. Row blocks (at most MC rows) and the tiles within a block (at
// most MR rows) are cut evenly: a short last tile reads the same panels as a full one for a
// fraction of the work (a 1-row tile of a 49-row layer cost ~4% of the whole conv). With
// several threads and few tasks, the row blocks are cut smaller or the column blocks narrower
// so that the threads get equal shares (3 tasks on 2 threads ran at 75%).
template <int MR, int64_t MC, int64_t NCP, class Setup, class Tile>
void for_each_tile(int64_t M, int64_t N, int64_t panel_cols, int64_t k_blocks,
                   const Setup& setup, const Tile& tile) {
  const int64_t panels = (N + panel_cols - 1) / panel_cols;
  int64_t row_blocks = (M + MC - 1) / MC, ncp = NCP;
  const int64_t threads = get_num_threads();
  if (threads > 1) {
    // the share of thread time doing work, when every task costs the same
    const auto busy = [&](int64_t tasks) {
      return static_cast<double>(tasks) / (static_cast<double>((tasks + threads - 1) / threads) *
                                           static_cast<double>(threads));
    };
    double best = busy(row_blocks * ((panels + ncp - 1) / ncp));
    const int64_t first = row_blocks;
    for (int64_t rb = first; rb <= first + threads && best < 0.999; ++rb) {
      if (rb > 1 && (M + rb - 1) / rb < 2 * MR) break;  // no slivers of rows
      for (int64_t c = NCP; c >= 2; c /= 2) {
        const double b = busy(rb * ((panels + c - 1) / c));
        if (b > best + 1e-9) best = b, row_blocks = rb, ncp = c;
      }
    }
  }
  const int64_t col_blocks = (panels + ncp - 1) / ncp;
  const int64_t block_rows = (M + row_blocks - 1) / row_blocks;  // <= MC
  parallel_for(row_blocks * col_blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t m_begin = (t / col_blocks) * block_rows;
      const int64_t m_end = M < m_begin + block_rows ? M : m_begin + block_rows;
      const int64_t tiles = (m_end - m_begin + MR - 1) / MR;
      const int64_t tile_rows = (m_end - m_begin) / tiles, longer = (m_end - m_begin) % tiles;
      const int64_t p_begin = (t % col_blocks) * ncp;
      const int64_t p_end = panels < p_begin + ncp ? panels : p_begin + ncp;
      const auto state = setup(m_begin, m_end);
      for (int64_t kb = 0; kb < k_blocks; ++kb) {
        for (int64_t p = p_begin; p < p_end;) {
          const int np = p + 1 < p_end ? 2 : 1;
          const int64_t n0 = p * panel_cols, span = np * panel_cols;
          const int cols = static_cast<int>(N - n0 < span ? N - n0 : span);
          int64_t m = m_begin;
          for (int64_t i = 0; i < tiles; ++i) {
            const int rows = static_cast<int>(tile_rows + (i < longer ? 1 : 0));
            tile(state, kb, m, rows, p, np, n0, cols);
            m += rows;
          }
          p += np;
        }
      }
    }
  });
}

// Runs task(n, q0, oc_begin, oc_end) over the tiles of `tile` virtual pixels of N images
// (q_count pixels each) for all OC output channels: one task per image tile, or per image tile
// and output-channel chunk when there are too few tiles to give every thread
// `tasks_per_thread` tasks (small maps at batch 1).
template <class Task>
void for_each_pixel_tile(int64_t N, int64_t q_count, int64_t tile, int64_t OC, const Task& task,
                         int64_t tasks_per_thread = 8) {
  const int64_t tiles = (q_count + tile - 1) / tile;
  const int64_t per_tile = tasks_per_thread * get_num_threads() / (N * tiles);
  const int64_t wanted = per_tile < 1 ? 1 : (per_tile > OC ? OC : per_tile);
  const int64_t oc_step = (OC + wanted - 1) / wanted;
  // As many chunks as that step needs: none empty (20 channels in 16 steps of 2 left chunks
  // starting past OC, and a kernel sizing a buffer by oc_end - oc_begin asked for 2^64 bytes).
  const int64_t oc_chunks = (OC + oc_step - 1) / oc_step;
  parallel_for(N * tiles * oc_chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t chunk = t % oc_chunks, nt = t / oc_chunks;
      const int64_t oc_begin = chunk * oc_step;
      const int64_t oc_end = oc_begin + oc_step < OC ? oc_begin + oc_step : OC;
      task(nt / tiles, (nt % tiles) * tile, oc_begin, oc_end);
    }
  });
}

// Anonymous namespace: PlaneRuns is not a template, and each ISA unit that includes this must
// keep its own copy compiled with its own flags (see epilogue_avx512.h).
namespace {

// The output pixels among the virtual pixels [q0, q0 + len) of a plane with rows of Wq
// (q = oh * Wq + ow; columns ow >= OW are padding): runs of consecutive lanes, one output row
// each or several when they follow each other in the output too (no padding columns, rows
// contiguous: a 1x1 conv's 7x7 map is one run, not 7 transposed 7 pixels at a time), with the
// offset oh * row_stride + ow * col_stride of their first pixel.
struct PlaneRuns {
  static constexpr int kMax = 136;  // len <= 128: at most len / Wq + 2 runs
  int n = 0;
  int lane[kMax], count[kMax];
  int64_t offset[kMax];

  PlaneRuns(int64_t q0, int64_t len, int64_t Wq, int64_t OW, int64_t row_stride,
            int64_t col_stride) {
    int64_t oh = q0 / Wq, ow = q0 % Wq;
    for (int64_t l = 0; l < len;) {
      const int64_t take = Wq - ow < len - l ? Wq - ow : len - l;  // to the end of the row
      const int64_t live = ow < OW ? (OW - ow < take ? OW - ow : take) : 0;
      const int64_t at = oh * row_stride + ow * col_stride;
      if (live > 0 && n > 0 && lane[n - 1] + count[n - 1] == l &&
          offset[n - 1] + count[n - 1] * col_stride == at) {
        count[n - 1] += static_cast<int>(live);
      } else if (live > 0) {
        lane[n] = static_cast<int>(l);
        count[n] = static_cast<int>(live);
        offset[n] = at;
        ++n;
      }
      l += take;
      ow = 0;
      ++oh;
    }
  }

  // Copies the output pixels of `lanes` (one value per virtual pixel) to `out` whose columns
  // are col_stride apart (kernels copy contiguous rows with vector moves themselves).
  void store_strided(const float* lanes, float* out, int64_t col_stride) const {
    for (int r = 0; r < n; ++r) {
      for (int i = 0; i < count[r]; ++i) out[offset[r] + i * col_stride] = lanes[lane[r] + i];
    }
  }
};

// Window mode (see SparsePlanesArgs): this thread's buffer for one slice's window, or null when
// the kernel reads planes.
inline float* window_buffer(const SparsePlanesArgs& a) {
  if (!a.window_channels) return nullptr;
  return static_cast<float*>(scratch(ScratchSlot::activations,
                                     static_cast<size_t>(a.slice_channels * kSparseWindowLd * 4)));
}

// Window mode (see SparsePlanesArgs): channels of slice j of pixels [q0, q0 + len) of image n
// into window[channel - j * slice_channels][kSparseWindowLd], through `transpose` (this ISA's
// transpose_f32) when the input is channels_last, row copies when it is NCHW.
inline void fill_window(const SparsePlanesArgs& a, int64_t n, int64_t q0, int64_t len, int64_t j,
                        float* window, void (*transpose)(const TransposeF32Args&)) {
  const int64_t c0 = j * a.slice_channels;
  const int64_t count =
      a.window_channels - c0 < a.slice_channels ? a.window_channels - c0 : a.slice_channels;
  const float* from = a.src + n * a.image_stride + q0 * a.window_px + c0 * a.window_ch;
  if (a.window_ch == 1) {  // channels_last: a pixel's channels contiguous (else pixels are)
    transpose(TransposeF32Args{from, window, len, count, a.window_px, kSparseWindowLd});
    return;
  }
  for (int64_t c = 0; c < count; ++c) {
    std::memcpy(window + c * kSparseWindowLd, from + c * a.window_ch,
                static_cast<size_t>(len) * sizeof(float));
  }
}

}  // namespace

// Source-image rows of a task's output pixels for an implicit-GEMM conv (see Int8ConvArgs):
// pixel m = (n, oh, ow) starts at src + ((n * Hs + oh * sh) * Ws + ow * sw) * Cs + offset.
template <class T, int64_t MC>
struct ConvTaskRows {
  const T* base[MC];
  int64_t first;
};

template <class T, int64_t MC>
ConvTaskRows<T, MC> conv_task_rows(const T* src, int64_t Hs, int64_t Ws, int64_t Cs,
                                   int64_t OH, int64_t OW, int64_t sh, int64_t sw,
                                   int64_t offset, int64_t m_begin, int64_t m_end) {
  ConvTaskRows<T, MC> t;
  t.first = m_begin;
  int64_t n = m_begin / (OH * OW), pix = m_begin % (OH * OW);
  int64_t oh = pix / OW, ow = pix % OW;
  for (int64_t m = m_begin; m < m_end; ++m) {
    t.base[m - m_begin] = src + offset + ((n * Hs + oh * sh) * Ws + ow * sw) * Cs;
    if (++ow == OW) {
      ow = 0;
      if (++oh == OH) {
        oh = 0;
        ++n;
      }
    }
  }
  return t;
}

}  // namespace pyfastcnn
