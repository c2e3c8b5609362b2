// BF16 convolution on AMX tiles (see Bf16ConvArgs): TDPBF16PS multiplies a 16 x 32 tile of
// bfloat16 A by a 16 x 32 tile of B pairs (16 k-pairs x 16 columns x 2) into a 16 x 16 FP32
// tile. Tasks, passes and tile loads: amx_tiles.h, which counts A in bytes (2 per element).
// B is the AVX-512 BF16 packed layout unchanged ([K/2][32][2] per panel of 32 columns: 16
// k-pairs of a half panel are a B tile), so packing is shared and shapes this kernel does not
// take go to the AVX-512 BF16 kernel (runs of different lengths). When K is not a multiple of 32
// elements, a B tile would read past its panel (the next panel's weights times A's zero
// padding: Inf * 0 for an infinite weight), so the weight is first copied with each panel
// zero-padded to a multiple of 32 (stems: a few KB per call). The runs arrive cut at k-block
// boundaries for the AVX-512 kernel; adjacent pieces are joined back into the kernel-row (or
// tap) runs. Epilogue: bias and clamp in FP32 (Epilogue512), as in the other float kernels.
// AMX-BF16 flushes denormal inputs and results to zero.
// GCC 12 warns that _mm512_undefined_*() in its own headers is uninitialized (fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "amx_tiles.h"
#include "pyfastcnn/memory.h"
#include "epilogue_avx512.h"
#include "pyfastcnn/kernels.h"

namespace pyfastcnn {
namespace avx512_amx {
namespace {

struct DotBf16 {  // bf16 pairs -> fp32
  static void c0() { _tile_dpbf16ps(0, 4, 6); }
  static void c1() { _tile_dpbf16ps(1, 4, 7); }
  static void c2() { _tile_dpbf16ps(2, 5, 6); }
  static void c3() { _tile_dpbf16ps(3, 5, 7); }
};

constexpr int kMaxRuns = 64;

// The runs of a GEMM row in bytes, joined from args' pieces; false when they are not all of
// one length or too many.
bool uniform_runs(const Bf16ConvArgs& args, int64_t* offsets, int64_t* count, int64_t* len) {
  int64_t n = 0;
  for (int64_t s = 0; s < args.num_segments; ++s) {
    const int64_t off = args.segment_offset[s], l = args.segment_len[s];
    if (n > 0 && offsets[n - 1] / 2 + len[n - 1] / 2 == off) {
      len[n - 1] += 2 * l;
      continue;
    }
    if (n == kMaxRuns) return false;
    offsets[n] = 2 * off;
    len[n++] = 2 * l;
  }
  for (int64_t i = 1; i < n; ++i) {
    if (len[i] != len[0]) return false;
  }
  *count = n;
  return n > 0;
}

void store_panel(const int32_t (*sums)[kPanelCols], int rows, const Bf16ConvArgs& args,
                 int64_t ch, int cols, int64_t m) {
  const int64_t OC = args.groups * args.ocg;
  const Epilogue512 e(args.clamp_min, args.clamp_max);
  for (int v = 0; v < 2 && 16 * v < cols; ++v) {
    const int valid = cols - 16 * v;
    const __mmask16 mask =
        valid >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1);
    const __m512 bias = Epilogue512::load_bias(args.bias, ch + 16 * v, mask);
    for (int r = 0; r < rows; ++r) {
      const __m512 acc = _mm512_castsi512_ps(_mm512_loadu_si512(sums[r] + 16 * v));
      _mm512_mask_storeu_ps(args.out + (m + r) * OC + ch + 16 * v, mask, e.apply(acc, bias));
    }
  }
}

}  // namespace

void conv2d_bf16(const Bf16ConvArgs& args) {
  int64_t offsets[kMaxRuns], len[kMaxRuns], runs = 0;
  int64_t K = 0;
  for (int64_t s = 0; s < args.num_segments; ++s) K += args.segment_len[s];
  if (!uniform_runs(args, offsets, &runs, len)) return avx512_bf16::conv2d_bf16(args);
  const int64_t M = args.N * args.OH * args.OW, panels = num_panels(args.ocg);
  const int64_t Kp = (K + 31) / 32 * 32, stride = Kp * kPanelCols * 2;  // panel bytes
  const uint16_t* packed = args.packed_b;
  int64_t group_elems = args.group_elems;
  if (Kp != K) {  // panels zero-padded to Kp (see the top)
    group_elems = panels * Kp * kPanelCols;
    uint16_t* padded = static_cast<uint16_t*>(scratch(
        ScratchSlot::packed_weights, static_cast<size_t>(args.groups * group_elems) * 2));
    for (int64_t grp = 0; grp < args.groups; ++grp) {
      for (int64_t p = 0; p < panels; ++p) {
        uint16_t* dst = padded + grp * group_elems + p * Kp * kPanelCols;
        std::memcpy(dst, args.packed_b + grp * args.group_elems + p * K * kPanelCols,
                    K * kPanelCols * 2);
        std::memset(dst + K * kPanelCols, 0, (Kp - K) * kPanelCols * 2);
      }
    }
    packed = padded;
  }
  const int64_t run_bytes = len[0];
  const uint8_t* src = reinterpret_cast<const uint8_t*>(args.src);
  const uint8_t* limit = src + args.N * args.Hs * args.Ws * args.Cs * 2;
  for (int64_t grp = 0; grp < args.groups; ++grp) {
    run_tasks<DotBf16>(
        conv_pieces(M, args.OW, run_bytes), panels,
        reinterpret_cast<const int8_t*>(packed + grp * group_elems), stride, nullptr,
        [&](const TaskRows& rows, RowSource* rs) {
          conv_rows(rows, src + 2 * grp * args.cg2, args.OH, args.OW, args.Hs, args.Ws,
                    args.stride_h, args.stride_w, 2 * args.Cs, rs);
          rs->segment_offset = offsets;
          rs->num_segments = runs;
          rs->segment_len = run_bytes;
          rs->limit = limit;
        },
        [&](const TaskRows& rows, int64_t p, const int32_t (*sums)[kPanelCols]) {
          const int64_t n0 = p * kPanelCols;
          const int cols =
              static_cast<int>(args.ocg - n0 < kPanelCols ? args.ocg - n0 : kPanelCols);
          for (int t = 0; t < 2; ++t) {
            if (rows.live[t]) {
              store_panel(sums + 16 * t, rows.live[t], args, grp * args.ocg + n0, cols,
                          rows.m[t]);
            }
          }
        });
  }
}

}  // namespace avx512_amx
}  // namespace pyfastcnn
