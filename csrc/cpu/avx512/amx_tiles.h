// AMX tile machinery shared by the AMX kernels (INT8 and BF16 GEMM/conv), in bytes: an A row
// is a run of bytes (4 int8 or 2 bf16 per 32-bit lane of a B tile row), a B panel holds 32
// columns as [K/4 bytes][32 columns][4 bytes], and 16 consecutive rows of it (one 64-byte
// chunk of K) make a B tile. The tile product (TDPBUSD, TDPBSSD, TDPBF16PS) is the `Dot` policy:
// Dot::c0(), c1(), c2(), c3() update sum tile 0-3 (A tile 4 or 5 times B tile 6 or 7). The
// intrinsics are macros that paste the register numbers into the assembly, hence literal
// numbers in four functions rather than a template.
//
// A task owns two A tiles of up to 16 rows each (output pixels) and a few panels; per panel it
// keeps a 32 x 32 block of 32-bit sums in four C tiles (2 A tiles x 2 B tiles), K in even
// passes of at most kKC bytes so a pass's A rows stay in L1 across panels. A tile is read
// straight from its rows when they are evenly spaced, else gathered into a zero-padded block.
// Sums go through a small buffer to the caller's vector epilogue, which runs while the tile unit
// works on the next panel (mostly: a vector load waits for older tile loads, which wait for the
// products before them; running the epilogue a few rows after each K step instead measured 5%
// slower).
//
// Only *_avx512amx.cc units include this; everything here has internal linkage.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace avx512_amx {
namespace {

constexpr int kPanelCols = 32;
constexpr int kRows = 32;          // rows per task: two A tiles
// Most K bytes per pass (a multiple of 64): a pass's A rows (32 x kKC) stay in L1 across panels.
// Each pass ends in stores of the sum tiles that wait for its last products (and the next pass
// loads them back), so K is cut evenly into as few passes as that allows: a 3x3 64-channel
// layer (K = 576) in one pass rather than 512 + 64 bytes ran 5-25% faster (640 rather than
// 1024 or 768 at most: measured; a 512-channel 3x3 layer lost 4% with 576-byte passes).
constexpr int64_t kKC = 640;
constexpr int64_t kNCP = 8;        // panels per task (256 columns)

int64_t num_panels(int64_t N) { return (N + kPanelCols - 1) / kPanelCols; }

// Tile registers: 0-3 sums (rows 0-15 / 16-31 x columns 0-15 / 16-31), 4-5 A, 6-7 B; all
// 16 rows x 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

void configure_tiles() {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
}

// Where the bytes of a task's rows come from: tile t (16 rows) holds live[t] rows (0 .. 16); row
// r of it is `num_segments` runs of `segment_len` bytes at base[16 t + r] + segment_offset[s]
// (plain GEMM: one run of K bytes).
struct RowSource {
  const uint8_t* base[kRows];
  int live[2];
  const int64_t* segment_offset;
  int64_t num_segments, segment_len;
  int64_t row_stride;    // bytes between consecutive rows when they are evenly spaced
  const uint8_t* limit;  // one past the last byte rows may be read from
  bool flip;  // int8 rows: xor 0x80 makes them unsigned (+128, undone by col_offset)
};

// An A tile is loaded straight from the rows when its live rows are row_stride apart, every
// 64-byte chunk of K lies inside one segment, no byte needs flipping, and the rows past the
// live ones (whose sums are dropped) still read inside `limit`; otherwise its bytes are
// gathered chunk by chunk into a zero-padded block.
struct ATile {
  bool direct;
  int64_t stride;  // direct: bytes between rows
};

ATile plan_tile(const RowSource& src, int t) {
  ATile tile{false, src.row_stride};
  const int live = src.live[t];
  if (live == 0 || src.flip || src.segment_len % 64 != 0) return tile;
  const uint8_t* const* base = src.base + 16 * t;
  for (int r = 1; r < live; ++r) {
    if (base[r] - base[0] != r * src.row_stride) return tile;
  }
  const int64_t reach = src.segment_offset[src.num_segments - 1] + src.segment_len;
  if (base[0] + 15 * src.row_stride + reach > src.limit) return tile;
  // Rows a multiple of 2 KB apart put 16 of a pass's 32 x 8 lines in each L1 set they use
  // (12 ways): they would evict each other between panels, so those are gathered. At 1 KB
  // apart it is 8 lines per set, which fits (measured: 1024-channel 1x1 layers 15% faster).
  tile.direct = (src.row_stride & 2047) != 0;
  return tile;
}

// a[r][0 .. ld) = bytes k0 .. k0 + kc of row r of tile t (zero past K and for rows past the
// live ones). Copied 64 bytes at a time with masked loads (runs are short: a kernel row). The
// pass starts at the same segment and offset in every row: found once (a division per run and
// row made gathering the stem's 24-byte runs cost 50x its tile work).
void gather(const RowSource& src, int t, int64_t k0, int64_t kc, int64_t ld, uint8_t* a) {
  const int64_t K = src.num_segments * src.segment_len, end = k0 + kc < K ? k0 + kc : K;
  const int64_t first_segment = k0 / src.segment_len, first_within = k0 % src.segment_len;
  const __m512i bits = _mm512_set1_epi8(static_cast<char>(src.flip ? 0x80 : 0));
  for (int r = 0; r < 16; ++r) {
    uint8_t* dst = a + r * ld;
    int64_t done = 0;
    if (r < src.live[t]) {
      const uint8_t* base = src.base[16 * t + r];
      const int64_t* offset = src.segment_offset + first_segment;
      int64_t within = first_within;
      for (int64_t k = k0; k < end; ++offset, within = 0) {
        int64_t len = src.segment_len - within;
        if (len > end - k) len = end - k;
        const uint8_t* from = base + *offset + within;
        uint8_t* to = dst + (k - k0);
        for (int64_t i = 0; i < len; i += 64) {
          const __mmask64 m = len - i >= 64 ? ~__mmask64{0} : (__mmask64{1} << (len - i)) - 1;
          _mm512_mask_storeu_epi8(to + i, m,
                                  _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, from + i), bits));
        }
        k += len;
      }
      done = end - k0;
    }
    for (int64_t i = done; i < ld; i += 64) {  // zeros from there to the row's end
      const int64_t left = ld - i;
      const __mmask64 m = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
      _mm512_mask_storeu_epi8(dst + i, m, _mm512_setzero_si512());
    }
  }
}

// Address and row stride of A tile t's bytes [k, k + 64): from the rows, or from its gathered
// block (which starts at k0).
struct AChunk {
  const uint8_t* ptr;
  int64_t stride;
};
inline AChunk a_chunk(const RowSource& src, const ATile& tile, int t, const uint8_t* block,
                      int64_t ld, int64_t k0, int64_t k) {
  if (!tile.direct) return {block + (k - k0), ld};
  return {src.base[16 * t] + src.segment_offset[k / src.segment_len] + k % src.segment_len,
          tile.stride};
}

// Sums of rows x one panel over bytes [k0, k0 + kc) of K: C tiles += A . B (two A tiles when
// more than 16 rows are live).
// Rows read in place come from L2 or further the first time (the task's first panel): ask for
// the chunk two steps ahead, 16 lines per tile.
inline void prefetch_rows(const RowSource& src, const ATile& tile, int t, int64_t k, int64_t end) {
  if (!tile.direct || k >= end) return;
  const uint8_t* p =
      src.base[16 * t] + src.segment_offset[k / src.segment_len] + k % src.segment_len;
  for (int r = 0; r < 16; ++r) _mm_prefetch(reinterpret_cast<const char*>(p + r * tile.stride),
                                            _MM_HINT_T0);
}

template <class Dot, bool TWO_A>
void panel_chunk(const RowSource& src, const ATile* tiles, const uint8_t* const* blocks,
                 int64_t ld, int64_t k0, int64_t kc, const int8_t* panel, bool prefetch) {
  for (int64_t k = k0; k < k0 + kc; k += 64) {
    if (prefetch) {
      prefetch_rows(src, tiles[0], 0, k + 128, k0 + kc);
      if (TWO_A) prefetch_rows(src, tiles[1], 1, k + 128, k0 + kc);
    }
    const int8_t* b = panel + k / 4 * 128;
    _tile_loadd(6, b, 128);
    _tile_loadd(7, b + 64, 128);
    const AChunk a0 = a_chunk(src, tiles[0], 0, blocks[0], ld, k0, k);
    _tile_loadd(4, a0.ptr, a0.stride);
    Dot::c0();
    Dot::c1();
    if constexpr (TWO_A) {
      const AChunk a1 = a_chunk(src, tiles[1], 1, blocks[1], ld, k0, k);
      _tile_loadd(5, a1.ptr, a1.stride);
      Dot::c2();
      Dot::c3();
    }
  }
}

// The sums of rows x panels [p0, p1) over all of K, into sums[p - p0][32][32], starting from
// zero or, per column, from c_init[32 p .. 32 p + 32) (null: zero). After the tile
// work of every panel, before its sums are stored, `overlap()` runs (vector work there overlaps
// the tile unit); `done(p)` runs once panel p's sums are stored and complete. `a` holds the
// gathered blocks: two of 16 x kKC bytes.
template <class Dot, class Overlap, class Done>
void task_sums(const RowSource& src, const int8_t* packed, int64_t stride, int64_t p0,
               int64_t p1, uint8_t* a, int32_t (*sums)[kRows][kPanelCols],
               const int32_t* c_init, const Overlap& overlap, const Done& done) {
  const int64_t K = src.num_segments * src.segment_len;
  const bool two_a = src.live[1] > 0;
  const ATile tiles[2] = {plan_tile(src, 0), plan_tile(src, 1)};
  const uint8_t* blocks[2] = {a, a + 16 * kKC};
  if (K == 0) {
    std::memset(sums, 0, sizeof(sums[0]) * (p1 - p0));
    for (int64_t p = p0; p < p1; ++p) done(p);
    return;
  }
  const int64_t passes = (K + kKC - 1) / kKC;
  const int64_t pass_bytes = ((K + passes - 1) / passes + 63) / 64 * 64;
  for (int64_t k0 = 0; k0 < K; k0 += pass_bytes) {
    const int64_t kc = K - k0 < pass_bytes ? K - k0 : pass_bytes, ld = (kc + 63) / 64 * 64;
    const bool last = k0 + kc >= K;
    for (int t = 0; t < (two_a ? 2 : 1); ++t) {
      if (!tiles[t].direct) gather(src, t, k0, kc, ld, a + t * 16 * kKC);
    }
    for (int64_t p = p0; p < p1; ++p) {
      int32_t* c = &sums[p - p0][0][0];
      if (k0 == 0 && c_init) {  // every row starts at c_init[32 p ..] (row stride 0)
        _tile_loadd(0, c_init + p * kPanelCols, 0);
        _tile_loadd(1, c_init + p * kPanelCols + 16, 0);
        _tile_loadd(2, c_init + p * kPanelCols, 0);
        _tile_loadd(3, c_init + p * kPanelCols + 16, 0);
      } else if (k0 == 0) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
      } else {
        _tile_loadd(0, c, 128);
        _tile_loadd(1, c + 16, 128);
        _tile_loadd(2, c + 16 * kPanelCols, 128);
        _tile_loadd(3, c + 16 * kPanelCols + 16, 128);
      }
      const int8_t* panel = packed + p * stride;
      if (two_a) {
        panel_chunk<Dot, true>(src, tiles, blocks, ld, k0, ld, panel, p == p0);
      } else {
        panel_chunk<Dot, false>(src, tiles, blocks, ld, k0, ld, panel, p == p0);
      }
      overlap();
      _tile_stored(0, c, 128);
      _tile_stored(1, c + 16, 128);
      _tile_stored(2, c + 16 * kPanelCols, 128);
      _tile_stored(3, c + 16 * kPanelCols + 16, 128);
      if (last) done(p);
    }
  }
}


// The GEMM rows of a task's tiles: tile t covers rows m[t] .. m[t] + live[t] - 1.
struct TaskRows {
  int64_t m[2];
  int live[2];
};

// How output pixels are cut into tiles of up to 16 rows. Flat: consecutive rows, so a tile may
// span two output rows (gathered: the rows are not evenly spaced in the source). By output
// row (when that wastes little): pieces of up to 16 pixels of one output row, whose rows are
// evenly spaced (loaded straight from the source); a short piece computes rows it drops.
struct Pieces {
  int64_t M, width;  // width 0: flat
  int64_t per_row() const { return (width + 15) / 16; }
  int64_t count() const { return width ? M / width * per_row() : (M + 15) / 16; }
  void get(int64_t i, int64_t* m, int* live) const {
    if (!width) {
      *m = 16 * i;
      *live = static_cast<int>(M - *m < 16 ? M - *m : 16);
      return;
    }
    const int64_t row = i / per_row(), j = i % per_row();
    *m = row * width + 16 * j;
    *live = static_cast<int>(width - 16 * j < 16 ? width - 16 * j : 16);
  }
};

// Pieces of a conv's output pixels: by output row when its runs lie whole in 64-byte chunks and
// the dropped rows cost at most 1/7 more tile work (OW = 14, 28, 56, 112; not 7 or 20), so the
// tiles can be read in place; else flat.
Pieces conv_pieces(int64_t M, int64_t OW, int64_t run_bytes) {
  const int64_t padded = (OW + 15) / 16 * 16;
  return Pieces{M, run_bytes % 64 == 0 && 7 * padded <= 8 * OW ? OW : 0};
}

// The rows of a conv task: output pixel m = (n * OH + oh) * OW + ow reads the padded NHWC
// source from image + ((n * Hs + oh * sh) * Ws + ow * sw) * pixel_bytes (image: the group's
// first channel, in bytes).
void conv_rows(const TaskRows& rows, const uint8_t* image, int64_t OH, int64_t OW, int64_t Hs,
               int64_t Ws, int64_t sh, int64_t sw, int64_t pixel_bytes, RowSource* src) {
  for (int t = 0; t < 2; ++t) {
    const int64_t m = rows.m[t];
    int64_t n = m / (OH * OW), pix = m % (OH * OW);
    int64_t oh = pix / OW, ow = pix % OW;
    for (int r = 0; r < rows.live[t]; ++r) {
      src->base[16 * t + r] = image + ((n * Hs + oh * sh) * Ws + ow * sw) * pixel_bytes;
      if (++ow == OW) {
        ow = 0;
        if (++oh == OH) {
          oh = 0;
          ++n;
        }
      }
    }
    src->live[t] = rows.live[t];
  }
  src->row_stride = sw * pixel_bytes;
  src->flip = false;
}

// Runs every task (two pieces x panels [p0, p1) of up to kNCP) on the thread pool. Each thread
// configures the tiles, builds a task's rows with `rows_of(rows, &src)`, and queues the epilogue
// of each finished panel, `epilogue(rows, p, sums)`, to run while the tile unit works on the
// next panel, of the same task or the next (sums double-buffered by task).
template <class Dot, class RowsOf, class Epilogue>
void run_tasks(const Pieces& pieces, int64_t panels, const int8_t* packed, int64_t stride,
               const int32_t* c_init, const RowsOf& rows_of, const Epilogue& epilogue) {
  const int64_t row_tasks = (pieces.count() + 1) / 2;
  // Fewer panels per task when there are few row tasks (small batch-1 maps), so that every
  // thread gets about four tasks.
  const int64_t threads = get_num_threads();
  int64_t ncp = (row_tasks * panels + 4 * threads - 1) / (4 * threads);
  ncp = ncp < 1 ? 1 : (ncp > kNCP ? kNCP : ncp);
  const int64_t panel_groups = (panels + ncp - 1) / ncp;
  // A few runs of consecutive tasks per thread (chunks are handed out dynamically): within a
  // run the epilogue overlaps the next task and the tiles are configured once.
  const int64_t tasks = row_tasks * panel_groups;
  const int64_t grain = threads > 1 ? (tasks + 4 * threads - 1) / (4 * threads) : tasks;
  parallel_for(tasks, grain, [&](int64_t begin, int64_t end) {
    configure_tiles();
    alignas(64) uint8_t a[kRows * kKC];
    alignas(64) int32_t sums[2][kNCP][kRows][kPanelCols];
    struct Pending {
      bool valid;
      TaskRows rows;
      int64_t p, p0;
      int buf;
    } pending{};
    const auto flush = [&] {
      if (!pending.valid) return;
      epilogue(pending.rows, pending.p, sums[pending.buf][pending.p - pending.p0]);
      pending.valid = false;
    };
    for (int64_t t = begin; t < end; ++t) {
      // Row tasks inner: consecutive tasks reuse the same panels from L2.
      const int64_t rt = t % row_tasks, pg = t / row_tasks;
      TaskRows rows{{0, 0}, {0, 0}};
      pieces.get(2 * rt, &rows.m[0], &rows.live[0]);
      if (2 * rt + 1 < pieces.count()) pieces.get(2 * rt + 1, &rows.m[1], &rows.live[1]);
      const int64_t p0 = pg * ncp, p1 = p0 + ncp < panels ? p0 + ncp : panels;
      const int buf = static_cast<int>(t & 1);
      RowSource src;
      rows_of(rows, &src);
      task_sums<Dot>(src, packed, stride, p0, p1, a, sums[buf], c_init, flush, [&](int64_t p) {
        flush();
        pending = {true, rows, p, p0, buf};
      });
    }
    flush();
    _tile_release();
  });
}

}  // namespace
}  // namespace avx512_amx
}  // namespace pyfastcnn
