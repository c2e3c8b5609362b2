// INT8 GEMM and implicit-GEMM conv on AMX tiles (Intel Sapphire Rapids and later).
//
// One TDPBUSD multiplies a 16 x 64 tile of unsigned A bytes by a 16 x 64 tile of signed B bytes
// laid out as 16 k-quads x 16 columns x 4 bytes, into a 16 x 16 int32 tile: 16K multiply-adds,
// 16x what one vpdpbusd does. B uses the AVX-512 VNNI packed layout unchanged (panels of 32
// columns, [K/4][32][4] bytes), so the two levels share packing and this level can hand small
// problems to the VNNI kernel: a B tile is 16 consecutive k-quads of one half panel (row stride
// 128 bytes). When K/4 is not a multiple of 16 the last B tile reads quads past the panel (the
// next panel, or the slack int8_packed_b_bytes adds after the last one); the A bytes they meet
// are zero, so they add nothing.
//
// A task owns up to 32 GEMM rows (output pixels) and a few panels. It first gathers its rows
// into a zero-padded block [32][KC] (K in chunks of at most KC bytes; signed A flipped to
// unsigned on the way, conv rows concatenated from their segments), then per panel keeps a
// 32 x 32 block of sums in four C tiles (2 A tiles x 2 B tiles). Sums go through a small int32
// buffer to the shared AVX-512 epilogue (int8_epilogue_avx512vnni.h).
// GCC 12 warns that _mm512_undefined_*() in its own headers is uninitialized (fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"
#include "int8_epilogue_avx512vnni.h"

namespace pyfastcnn {
namespace avx512_amx {
namespace {

using avx512_vnni::lane_mask;
using avx512_vnni::out_bytes;
using avx512_vnni::store_tile_vector;

constexpr int kPanelCols = 32;
constexpr int kRows = 32;          // rows per task: two A tiles
// K bytes per pass (a multiple of 64): a pass's A rows (32 x kKC) stay in L1 across panels.
constexpr int64_t kKC = 512;
constexpr int64_t kNCP = 8;        // panels per task (256 columns)
constexpr int64_t kSlackBytes = 15 * 128;  // quads the last B tile may read past the end

int64_t k_quads(int64_t K) { return (K + 3) / 4; }
int64_t panel_bytes(int64_t K) { return k_quads(K) * kPanelCols * 4; }
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

// Where the bytes of GEMM row r come from: `segments` runs of `segment_len` bytes at
// base[r] + segment_offset[s] (plain GEMM: one run of K bytes).
// A task's rows: tile t (16 rows) holds live[t] rows (0 .. 16), row r at base[16 t + r].
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
  // Rows a multiple of 1 KB apart share L1 sets: 32 of them evict each other between panels.
  tile.direct = (src.row_stride & 1023) != 0;
  return tile;
}

// a[r][0 .. ld) = bytes k0 .. k0 + kc of row r of tile t (zero past K and for rows past the
// live ones). Copied 64 bytes at a time with masked loads (runs are short: a kernel row).
void gather(const RowSource& src, int t, int64_t k0, int64_t kc, int64_t ld, uint8_t* a) {
  const int64_t K = src.num_segments * src.segment_len, end = k0 + kc < K ? k0 + kc : K;
  const __m512i bits = _mm512_set1_epi8(static_cast<char>(src.flip ? 0x80 : 0));
  for (int r = 0; r < 16; ++r) {
    uint8_t* dst = a + r * ld;
    int64_t done = 0;
    if (r < src.live[t]) {
      const uint8_t* base = src.base[16 * t + r];
      for (int64_t k = k0; k < end;) {
        const int64_t s = k / src.segment_len, within = k % src.segment_len;
        int64_t len = src.segment_len - within;
        if (len > end - k) len = end - k;
        const uint8_t* from = base + src.segment_offset[s] + within;
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
template <bool TWO_A>
void panel_chunk(const RowSource& src, const ATile* tiles, const uint8_t* const* blocks,
                 int64_t ld, int64_t k0, int64_t kc, const int8_t* panel) {
  for (int64_t k = k0; k < k0 + kc; k += 64) {
    const int8_t* b = panel + k / 4 * 128;
    _tile_loadd(6, b, 128);
    _tile_loadd(7, b + 64, 128);
    const AChunk a0 = a_chunk(src, tiles[0], 0, blocks[0], ld, k0, k);
    _tile_loadd(4, a0.ptr, a0.stride);
    _tile_dpbusd(0, 4, 6);
    _tile_dpbusd(1, 4, 7);
    if constexpr (TWO_A) {
      const AChunk a1 = a_chunk(src, tiles[1], 1, blocks[1], ld, k0, k);
      _tile_loadd(5, a1.ptr, a1.stride);
      _tile_dpbusd(2, 5, 6);
      _tile_dpbusd(3, 5, 7);
    }
  }
}

// The sums of rows x panels [p0, p1) over all of K, into sums[p - p0][32][32]. After the tile
// work of every panel, before its sums are stored, `overlap()` runs (vector work there overlaps
// the tile unit); `done(p)` runs once panel p's sums are stored and complete. `a` holds the
// gathered blocks: two of 16 x kKC bytes.
template <class Overlap, class Done>
void task_sums(const RowSource& src, const int8_t* packed, int64_t stride, int64_t p0,
               int64_t p1, uint8_t* a, int32_t (*sums)[kRows][kPanelCols],
               const Overlap& overlap, const Done& done) {
  const int64_t K = src.num_segments * src.segment_len;
  const bool two_a = src.live[1] > 0;
  const ATile tiles[2] = {plan_tile(src, 0), plan_tile(src, 1)};
  const uint8_t* blocks[2] = {a, a + 16 * kKC};
  if (K == 0) {
    std::memset(sums, 0, sizeof(sums[0]) * (p1 - p0));
    for (int64_t p = p0; p < p1; ++p) done(p);
    return;
  }
  for (int64_t k0 = 0; k0 < K; k0 += kKC) {
    const int64_t kc = K - k0 < kKC ? K - k0 : kKC, ld = (kc + 63) / 64 * 64;
    const bool last = k0 + kc >= K;
    for (int t = 0; t < (two_a ? 2 : 1); ++t) {
      if (!tiles[t].direct) gather(src, t, k0, kc, ld, a + t * 16 * kKC);
    }
    for (int64_t p = p0; p < p1; ++p) {
      int32_t* c = &sums[p - p0][0][0];
      if (k0 == 0) {
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
        panel_chunk<true>(src, tiles, blocks, ld, k0, ld, panel);
      } else {
        panel_chunk<false>(src, tiles, blocks, ld, k0, ld, panel);
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

// 8-bit epilogue of a row block x all 32 columns of a panel: per row, both vectors requantized,
// packed to bytes with saturation (the final clamp) and stored at once. Same float operations
// as store_tile_vector, so the same bytes.
template <Int8OutKind KIND>
void store_panel_bytes(const int32_t (*sums)[kPanelCols], int rows, const Int8Epilogue& epilogue,
                       int64_t ch, char* out, int64_t row_bytes) {
  const Int8Epilogue epi = epilogue;  // a local: byte stores cannot alias it
  const __m512i off0 = epi.col_offset ? _mm512_loadu_si512(epi.col_offset + ch)
                                      : _mm512_setzero_si512();
  const __m512i off1 = epi.col_offset ? _mm512_loadu_si512(epi.col_offset + ch + 16)
                                      : _mm512_setzero_si512();
  const __m512 scale0 = _mm512_loadu_ps(epi.scale + ch), scale1 = _mm512_loadu_ps(epi.scale + ch + 16);
  const __m512 bias0 = Epilogue512::load_bias(epi.bias, ch);
  const __m512 bias1 = Epilogue512::load_bias(epi.bias, ch + 16);
  // After the packs, dword 4L + j (L: 128-bit lane, j < 2) holds channels 16j + 4L .. +3
  // (dwords 2, 3 of each lane repeat them): gather dwords 0, 4, 8, 12, 1, 5, 9, 13 in front.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  for (int r = 0; r < rows; ++r) {
    const __m512i y0 = avx512_vnni::requantize_epi32(
        _mm512_add_epi32(_mm512_load_si512(sums[r]), off0), scale0, bias0, epi);
    const __m512i y1 = avx512_vnni::requantize_epi32(
        _mm512_add_epi32(_mm512_load_si512(sums[r] + 16), off1), scale1, bias1, epi);
    const __m512i w = _mm512_packs_epi32(y0, y1);
    const __m512i b = KIND == Int8OutKind::s8 ? _mm512_packs_epi16(w, w) : _mm512_packus_epi16(w, w);
    const __m512i bytes = _mm512_permutexvar_epi32(order, b);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * row_bytes + ch),
                        _mm512_castsi512_si256(bytes));
  }
}

// Epilogue of one panel's sums: output rows out + (m + r) * row_bytes, channels
// ch .. ch + cols (conv groups offset them).
template <Int8OutKind KIND>
void store_panel(const int32_t (*sums)[kPanelCols], int rows, const Int8Epilogue& epi,
                 int64_t ch, int cols, char* out, int64_t row_bytes, int64_t m) {
  if constexpr (KIND == Int8OutKind::u8 || KIND == Int8OutKind::s8) {
    if (cols == kPanelCols && !epi.residual) {
      return store_panel_bytes<KIND>(sums, rows, epi, ch, out + m * row_bytes, row_bytes);
    }
  }
  for (int v = 0; v < 2 && 16 * v < cols; ++v) {
    const __mmask16 mask = lane_mask(cols - 16 * v);
    const int64_t n = ch + 16 * v;
    const __m512i offset = epi.col_offset ? _mm512_maskz_loadu_epi32(mask, epi.col_offset + n)
                                          : _mm512_setzero_si512();
    __m512 scale = _mm512_setzero_ps(), bias = _mm512_setzero_ps();
    if constexpr (KIND != Int8OutKind::i32) {
      scale = _mm512_maskz_loadu_ps(mask, epi.scale + n);
      bias = Epilogue512::load_bias(epi.bias, n, mask);
    }
    for (int r = 0; r < rows; ++r) {
      const __m512i acc = _mm512_add_epi32(_mm512_loadu_si512(sums[r] + 16 * v), offset);
      const uint8_t* res_row = epi.residual ? epi.residual + (m + r) * epi.residual_ld : nullptr;
      store_tile_vector<KIND>(acc, mask, scale, bias, epi, out + (m + r) * row_bytes, n,
                              res_row);
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

// Runs every task (two pieces x panels [p0, p1) of up to kNCP) on the thread pool. Each thread
// configures the tiles, builds a task's rows with `rows_of(rows, &src)`, and queues the epilogue
// of each finished panel, `epilogue(rows, p, sums)`, to run while the tile unit works on the
// next panel, of the same task or the next (sums double-buffered by task).
template <class RowsOf, class Epilogue>
void run_tasks(const Pieces& pieces, int64_t panels, const int8_t* packed, int64_t stride,
               const RowsOf& rows_of, const Epilogue& epilogue) {
  const int64_t row_tasks = (pieces.count() + 1) / 2;
  const int64_t panel_groups = (panels + kNCP - 1) / kNCP;
  parallel_for(row_tasks * panel_groups, 1, [&](int64_t begin, int64_t end) {
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
      const int64_t p0 = pg * kNCP, p1 = p0 + kNCP < panels ? p0 + kNCP : panels;
      const int buf = static_cast<int>(t & 1);
      RowSource src;
      rows_of(rows, &src);
      task_sums(src, packed, stride, p0, p1, a, sums[buf], flush, [&](int64_t p) {
        flush();
        pending = {true, rows, p, p0, buf};
      });
    }
    flush();
    _tile_release();
  });
}

// Epilogue of a task's sums for panel columns [n0, n0 + cols) (channels ch0 + ..).
template <Int8OutKind KIND>
void store_task(const TaskRows& rows, const int32_t (*sums)[kPanelCols], const Int8Epilogue& epi,
                int64_t ch, int cols, char* out, int64_t row_bytes) {
  for (int t = 0; t < 2; ++t) {
    if (rows.live[t]) {
      store_panel<KIND>(sums + 16 * t, rows.live[t], epi, ch, cols, out, row_bytes, rows.m[t]);
    }
  }
}

template <Int8OutKind KIND>
void gemm(const Int8GemmArgs& args) {
  const Int8GemmShape s = args.shape;
  const int64_t row_bytes = args.ldc * out_bytes(KIND);
  const int64_t whole_row = 0;
  run_tasks(
      Pieces{s.M, 0}, num_panels(s.N), static_cast<const int8_t*>(args.packed_b),
      panel_bytes(s.K),
      [&](const TaskRows& rows, RowSource* src) {
        for (int t = 0; t < 2; ++t) {
          for (int r = 0; r < rows.live[t]; ++r) {
            src->base[16 * t + r] = args.a + (rows.m[t] + r) * args.lda;
          }
          src->live[t] = rows.live[t];
        }
        src->segment_offset = &whole_row;
        src->num_segments = 1;
        src->segment_len = s.K;
        src->row_stride = args.lda;
        src->limit = args.a + (s.M - 1) * args.lda + s.K;
        src->flip = args.a_signed;
      },
      [&](const TaskRows& rows, int64_t p, const int32_t (*sums)[kPanelCols]) {
        const int64_t n0 = p * kPanelCols;
        const int cols = static_cast<int>(s.N - n0 < kPanelCols ? s.N - n0 : kPanelCols);
        store_task<KIND>(rows, sums, args.epi, n0, cols, static_cast<char*>(args.c), row_bytes);
      });
}

template <Int8OutKind KIND>
void conv(const Int8ConvArgs& args) {
  const int64_t K = args.num_segments * args.segment_len;
  const int64_t M = args.N * args.OH * args.OW;
  const int64_t out_pixel_bytes = args.groups * args.ocg * out_bytes(KIND);
  // By output row when the dropped rows cost at most 1/7 more tile work (OW = 14, 28, 56, 112;
  // not 7 or 20) and the tiles can then be read in place.
  const int64_t padded = (args.OW + 15) / 16 * 16;
  const bool by_row = args.segment_len % 64 == 0 && 7 * padded <= 8 * args.OW;
  const uint8_t* limit = args.src + args.N * args.Hs * args.Ws * args.Cs;
  for (int64_t grp = 0; grp < args.groups; ++grp) {
    run_tasks(
        Pieces{M, by_row ? args.OW : 0}, num_panels(args.ocg),
        static_cast<const int8_t*>(args.packed_b) + grp * args.group_bytes, panel_bytes(K),
        [&](const TaskRows& rows, RowSource* src) {
          for (int t = 0; t < 2; ++t) {
            const int64_t m = rows.m[t];
            int64_t n = m / (args.OH * args.OW), pix = m % (args.OH * args.OW);
            int64_t oh = pix / args.OW, ow = pix % args.OW;
            for (int r = 0; r < rows.live[t]; ++r) {
              src->base[16 * t + r] =
                  args.src + grp * args.cg4 +
                  ((n * args.Hs + oh * args.stride_h) * args.Ws + ow * args.stride_w) * args.Cs;
              if (++ow == args.OW) {
                ow = 0;
                if (++oh == args.OH) {
                  oh = 0;
                  ++n;
                }
              }
            }
            src->live[t] = rows.live[t];
          }
          src->segment_offset = args.segment_offset;
          src->num_segments = args.num_segments;
          src->segment_len = args.segment_len;
          src->row_stride = args.stride_w * args.Cs;
          src->limit = limit;
          src->flip = false;
        },
        [&](const TaskRows& rows, int64_t p, const int32_t (*sums)[kPanelCols]) {
          const int64_t n0 = p * kPanelCols;
          const int cols =
              static_cast<int>(args.ocg - n0 < kPanelCols ? args.ocg - n0 : kPanelCols);
          store_task<KIND>(rows, sums, args.epi, grp * args.ocg + n0, cols,
                           static_cast<char*>(args.out), out_pixel_bytes);
        });
  }
}

}  // namespace

size_t int8_packed_b_bytes(int64_t K, int64_t N) {
  return static_cast<size_t>(num_panels(N) * panel_bytes(K) + kSlackBytes);
}

void int8_pack_b(const int8_t* b, int64_t ldb, int64_t K, int64_t N, void* packed) {
  avx512_vnni::int8_pack_b(b, ldb, K, N, packed);
  std::memset(static_cast<int8_t*>(packed) + num_panels(N) * panel_bytes(K), 0, kSlackBytes);
}

void int8_gemm(const Int8GemmArgs& args) {
  // A tile holds 16 rows: below that the VNNI kernel (same packed layout) wastes less.
  if (args.shape.M < 16) return avx512_vnni::int8_gemm(args);
  switch (args.epi.kind) {
    case Int8OutKind::i32: return gemm<Int8OutKind::i32>(args);
    case Int8OutKind::f32: return gemm<Int8OutKind::f32>(args);
    case Int8OutKind::s8: return gemm<Int8OutKind::s8>(args);
    case Int8OutKind::u8: return gemm<Int8OutKind::u8>(args);
  }
}

void int8_conv(const Int8ConvArgs& args) {
  // Short runs (a few input channels, e.g. a 3-channel stem): gathering them costs more than
  // the tiles save.
  if (args.segment_len < 64) return avx512_vnni::int8_conv(args);
  switch (args.epi.kind) {
    case Int8OutKind::i32: return conv<Int8OutKind::i32>(args);
    case Int8OutKind::f32: return conv<Int8OutKind::f32>(args);
    case Int8OutKind::s8: return conv<Int8OutKind::s8>(args);
    case Int8OutKind::u8: return conv<Int8OutKind::u8>(args);
  }
}

void int8_repack_conv_rows(const void* packed, int64_t KH, int64_t KW, int64_t C, int64_t N,
                           void* out) {
  avx512_vnni::int8_repack_conv_rows(packed, KH, KW, C, N, out);
  const int64_t lq = (KW * C + 3) / 4 * 4;
  std::memset(static_cast<int8_t*>(out) + num_panels(N) * panel_bytes(KH * lq), 0, kSlackBytes);
}

}  // namespace avx512_amx
}  // namespace pyfastcnn
