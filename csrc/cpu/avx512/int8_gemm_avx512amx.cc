// INT8 GEMM and implicit-GEMM conv on AMX tiles (Intel Sapphire Rapids and later).
//
// One TDPBUSD multiplies a 16 x 64 tile of unsigned A bytes by a 16 x 64 tile of signed B bytes
// laid out as 16 k-quads x 16 columns x 4 bytes, into a 16 x 16 int32 tile: 16K multiply-adds,
// 16x what one vpdpbusd does. Tasks, passes and tile loads: amx_tiles.h. B uses the AVX-512
// VNNI packed layout unchanged (panels of 32 columns, [K/4][32][4] bytes), so the two levels
// share packing and this level hands small problems to the VNNI kernel. When K/4 is not a
// multiple of 16 the last B tile reads quads past the panel (the next panel, or the slack
// int8_packed_b_bytes adds after the last one); the A bytes they meet are zero, so they add
// nothing (integers: no NaN to fear). Signed A: TDPBSSD on A as it is when B's column sums
// come with it (gemm_any_a), else flipped to unsigned while gathered. Sums go to the shared
// AVX-512 requantization epilogue (int8_epilogue_avx512vnni.h).
// GCC 12 warns that _mm512_undefined_*() in its own headers is uninitialized (fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "amx_tiles.h"
#include "int8_epilogue_avx512vnni.h"
#include "pyfastcnn/kernels.h"
#include "pyfastcnn/memory.h"

namespace pyfastcnn {
namespace avx512_amx {
namespace {

using avx512_vnni::lane_mask;
using avx512_vnni::store_tile_vector;
using avx512_vnni::ChannelOperands;
using avx512_vnni::channel_operands;

struct DotInt8 {  // u8 x s8 -> int32
  static void c0() { _tile_dpbusd(0, 4, 6); }
  static void c1() { _tile_dpbusd(1, 4, 7); }
  static void c2() { _tile_dpbusd(2, 5, 6); }
  static void c3() { _tile_dpbusd(3, 5, 7); }
};
struct DotInt8Signed {  // s8 x s8 -> int32
  static void c0() { _tile_dpbssd(0, 4, 6); }
  static void c1() { _tile_dpbssd(1, 4, 7); }
  static void c2() { _tile_dpbssd(2, 5, 6); }
  static void c3() { _tile_dpbssd(3, 5, 7); }
};
constexpr int64_t kSlackBytes = 15 * 128;  // quads the last B tile may read past the end

int64_t k_quads(int64_t K) { return (K + 3) / 4; }
int64_t panel_bytes(int64_t K) { return k_quads(K) * kPanelCols * 4; }

// 8-bit epilogue of a row block x all 32 columns of a panel (rows m + r): per row, both vectors
// requantized (with the fused residual add, if any), packed to bytes with saturation (the final
// clamp) and stored at once. Same float operations as store_tile_vector, so the same bytes.
template <Int8OutKind KIND>
void store_panel_bytes(const int32_t (*sums)[kPanelCols], int rows, const Int8Epilogue& epilogue,
                       int64_t ch, char* out, int64_t row_bytes, int64_t m) {
  const Int8Epilogue epi = epilogue;  // a local: byte stores cannot alias it
  const avx512_vnni::OutputClamp clamp = avx512_vnni::output_clamp<KIND>(epi);
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
    // The rows 32 further on are the next task's (row tasks run in order): their output lines
    // and residual codes are fetched now, a task ahead (the stores and the residual loads
    // waited on memory: ResNet-50 INT8 4-7% faster; prefetchw instead: no better).
    // (Addresses as integers: past the last task they point past the buffers; a prefetch never
    // faults, but pointer arithmetic there would be undefined.)
    const uintptr_t next_out = reinterpret_cast<uintptr_t>(out) + (m + r + 32) * row_bytes + ch;
    _mm_prefetch(reinterpret_cast<const char*>(next_out), _MM_HINT_T0);
    if (epi.residual) {
      const uintptr_t next = reinterpret_cast<uintptr_t>(epi.residual) +
                             (m + r + 32) * epi.residual_ld + ch;
      _mm_prefetch(reinterpret_cast<const char*>(next), _MM_HINT_T0);
    }
    // The fused residual add's codes for this row's 32 channels (null without one).
    const uint8_t* res = epi.residual ? epi.residual + (m + r) * epi.residual_ld + ch : nullptr;
    const __m512i y0 = avx512_vnni::requantize_epi32(
        _mm512_add_epi32(_mm512_load_si512(sums[r]), off0), scale0, bias0, clamp, epi, res);
    const __m512i y1 = avx512_vnni::requantize_epi32(
        _mm512_add_epi32(_mm512_load_si512(sums[r] + 16), off1), scale1, bias1, clamp, epi,
        res ? res + 16 : nullptr);
    const __m512i w = _mm512_packs_epi32(y0, y1);
    const __m512i b = KIND == Int8OutKind::s8 ? _mm512_packs_epi16(w, w) : _mm512_packus_epi16(w, w);
    const __m512i bytes = _mm512_permutexvar_epi32(order, b);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (m + r) * row_bytes + ch),
                        _mm512_castsi512_si256(bytes));
  }
}

// Epilogue of one panel's sums: output rows out + (m + r) * row_bytes, channels
// ch .. ch + cols (conv groups offset them).
template <Int8OutKind KIND>
void store_panel(const int32_t (*sums)[kPanelCols], int rows, const Int8Epilogue& epi,
                 int64_t ch, int cols, char* out, int64_t row_bytes, int64_t m) {
  if constexpr (KIND == Int8OutKind::u8 || KIND == Int8OutKind::s8) {
    if (cols == kPanelCols) {
      return store_panel_bytes<KIND>(sums, rows, epi, ch, out, row_bytes, m);
    }
  }
  const avx512_vnni::OutputClamp clamp = avx512_vnni::output_clamp<KIND>(epi);
  for (int v = 0; v < 2 && 16 * v < cols; ++v) {
    const __mmask16 mask = lane_mask(cols - 16 * v);
    const int64_t n = ch + 16 * v;
    const ChannelOperands c = channel_operands<KIND>(epi, n, mask);
    for (int r = 0; r < rows; ++r) {
      const __m512i acc = _mm512_add_epi32(_mm512_loadu_si512(sums[r] + 16 * v), c.offset);
      const uint8_t* res_row = epi.residual ? epi.residual + (m + r) * epi.residual_ld : nullptr;
      store_tile_vector<KIND>(acc, mask, c.scale, c.bias, clamp, epi, out + (m + r) * row_bytes, n,
                              res_row);
    }
  }
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

// Signed A with B's column sums: TDPBSSD on A as it is (read in place, no flip while
// gathering), each column's sums starting at 128 * sum_k b[k][n], which is what the +128 shift
// the epilogue's offsets assume would have added.
template <Int8OutKind KIND, class Dot>
void gemm(const Int8GemmArgs& args, bool flip, const int32_t* c_init) {
  const Int8GemmShape s = args.shape;
  const int64_t row_bytes = args.ldc * out_bytes(KIND);
  const int64_t whole_row = 0;
  run_tasks<Dot>(
      Pieces{s.M, 0}, num_panels(s.N), static_cast<const int8_t*>(args.packed_b),
      panel_bytes(s.K), c_init,
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
        src->flip = flip;
      },
      [&](const TaskRows& rows, int64_t p, const int32_t (*sums)[kPanelCols]) {
        const int64_t n0 = p * kPanelCols;
        const int cols = static_cast<int>(s.N - n0 < kPanelCols ? s.N - n0 : kPanelCols);
        store_task<KIND>(rows, sums, args.epi, n0, cols, static_cast<char*>(args.c), row_bytes);
      });
}

template <Int8OutKind KIND>
void gemm_any_a(const Int8GemmArgs& args) {
  if (!args.a_signed || !args.b_col_sums) {
    return gemm<KIND, DotInt8>(args, args.a_signed, nullptr);
  }
  const int64_t n_padded = num_panels(args.shape.N) * kPanelCols;
  int32_t* init = static_cast<int32_t*>(
      scratch(ScratchSlot::int32_sums, static_cast<size_t>(n_padded) * sizeof(int32_t)));
  for (int64_t n = 0; n < n_padded; ++n) {
    // Wraps like the kernels' sums (int32 arithmetic modulo 2^32).
    init[n] = n < args.shape.N
                  ? static_cast<int32_t>(128u * static_cast<uint32_t>(args.b_col_sums[n]))
                  : 0;
  }
  gemm<KIND, DotInt8Signed>(args, false, init);
}

template <Int8OutKind KIND>
void conv(const Int8ConvArgs& args) {
  const int64_t K = args.num_segments * args.segment_len;
  const int64_t M = args.N * args.OH * args.OW;
  const int64_t out_pixel_bytes = args.groups * args.ocg * out_bytes(KIND);
  const uint8_t* limit = args.src + args.N * args.Hs * args.Ws * args.Cs;
  for (int64_t grp = 0; grp < args.groups; ++grp) {
    run_tasks<DotInt8>(
        conv_pieces(M, args.OW, args.segment_len), num_panels(args.ocg),
        static_cast<const int8_t*>(args.packed_b) + grp * args.group_bytes, panel_bytes(K),
        nullptr, [&](const TaskRows& rows, RowSource* src) {
          conv_rows(rows, args.src + grp * args.cg4, args.OH, args.OW, args.Hs, args.Ws,
                    args.stride_h, args.stride_w, args.Cs, src);
          src->segment_offset = args.segment_offset;
          src->num_segments = args.num_segments;
          src->segment_len = args.segment_len;
          src->limit = limit;
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
  with_out_kind(args.epi.kind, [&](auto kind) {
    using K = decltype(kind);
    gemm_any_a<K::value>(args);
  });
}

void int8_conv(const Int8ConvArgs& args) {
  // Short runs (a few input channels, e.g. a 3-channel stem): gathering them costs more than
  // the tiles save.
  if (args.segment_len < 64) return avx512_vnni::int8_conv(args);
  with_out_kind(args.epi.kind, [&](auto kind) {
    using K = decltype(kind);
    conv<K::value>(args);
  });
}

void int8_repack_conv_rows(const void* packed, int64_t KH, int64_t KW, int64_t C, int64_t N,
                           int64_t stack, int64_t Lq, void* out) {
  avx512_vnni::int8_repack_conv_rows(packed, KH, KW, C, N, stack, Lq, out);
  const int64_t K = (KH + stack - 1) / stack * Lq;
  std::memset(static_cast<int8_t*>(out) + num_panels(N) * panel_bytes(K), 0, kSlackBytes);
}

}  // namespace avx512_amx
}  // namespace pyfastcnn
