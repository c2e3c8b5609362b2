// The store side of the sparse INT8 kernels for AVX-512 VNNI (block and group layouts): a
// chunk of 16 output channels x up to 128 virtual pixels of int32 sums is requantized and written
// to the NHWC output. Included by the kernel files of one ISA only (anonymous namespace).
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "int8_epilogue_avx512vnni.h"
#include "pyfastcnn/kernels.h"

namespace pyfastcnn {
namespace avx512_vnni {
namespace {

constexpr int kMaxVectors = 8;  // accumulators per channel: tile <= 128 virtual pixels

// r[i] = row i of a 16 x 16 int32 block; on return r[j] = column j. Inlined so that r stays in
// registers.
__attribute__((always_inline)) inline void transpose16(__m512i r[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  // u[4b + j] holds, per 128-bit lane L, rows 4b .. 4b+3 of column 4L + j.
  for (int b = 0; b < 4; ++b) {
    u[4 * b + 0] = _mm512_unpacklo_epi64(t[4 * b], t[4 * b + 2]);
    u[4 * b + 1] = _mm512_unpackhi_epi64(t[4 * b], t[4 * b + 2]);
    u[4 * b + 2] = _mm512_unpacklo_epi64(t[4 * b + 1], t[4 * b + 3]);
    u[4 * b + 3] = _mm512_unpackhi_epi64(t[4 * b + 1], t[4 * b + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512i v0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x88);   // lanes 0, 2
    const __m512i v1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xDD);   // lanes 1, 3
    const __m512i w0 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x88);
    const __m512i w1 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xDD);
    r[j] = _mm512_shuffle_i32x4(v0, w0, 0x88);
    r[8 + j] = _mm512_shuffle_i32x4(v0, w0, 0xDD);
    r[4 + j] = _mm512_shuffle_i32x4(v1, w1, 0x88);
    r[12 + j] = _mm512_shuffle_i32x4(v1, w1, 0xDD);
  }
}

// 8-bit output of a chunk's sums (16 channels x 16T pixels): requantized in pixel lanes (each
// row is one channel, so its offset, scale and bias are broadcasts), packed to bytes with
// saturation (which is the final clamp to the output range), then a 16 x 16 byte transpose
// stores each pixel's 16 channels. Per 16 x 16 block this saves the int32 transpose and a
// byte conversion per pixel over requantizing after the transpose. Same float operations in
// the same order as store_tile_vector: exactly the same bytes.
#define PYFASTCNN_REQUANT_ROW(i)                                                              \
  const __m512i y##i = requantize_epi32(                                                      \
      _mm512_add_epi32(_mm512_load_si512(sums[i] + 16 * v), _mm512_set1_epi32(off[i])),       \
      _mm512_set1_ps(sc[i]), _mm512_set1_ps(bi[i]), clamp, epi);
#define PYFASTCNN_STORE_PIXEL(L, j)                                         \
  if (4 * L + j < pixels) {                                                 \
    if (ow < OW) {                                                          \
      _mm_mask_storeu_epi8(out_image + (oh * OW + ow) * pixel_bytes + oc0, mask, \
                           _mm512_extracti32x4_epi32(o##j, L));             \
    }                                                                       \
    if (++ow == Wq) {                                                       \
      ow = 0;                                                               \
      ++oh;                                                                 \
    }                                                                       \
  }
template <int T, Int8OutKind KIND>
void requantize_bytes(const int32_t (*sums)[kMaxVectors * 16], int count, int64_t oc0,
                      const Int8Epilogue& epilogue, int64_t q0, int64_t q_count, int64_t Wq,
                      int64_t OW, int64_t pixel_bytes, char* out_image) {
  constexpr bool kSigned = KIND == Int8OutKind::s8;
  const Int8Epilogue epi = epilogue;  // a local: byte stores cannot alias it
  const OutputClamp clamp = output_clamp<KIND>(epi);
  int32_t off[16];
  float sc[16], bi[16];
  for (int i = 0; i < 16; ++i) {
    off[i] = i < count && epi.col_offset ? epi.col_offset[oc0 + i] : 0;
    sc[i] = i < count ? epi.scale[oc0 + i] : 0.0f;
    bi[i] = i < count && epi.bias ? epi.bias[oc0 + i] : 0.0f;
  }
  // Per 128-bit lane: (channel, pixel) byte order to (pixel, channel), 4 x 4.
  const __m512i to_pixel_major = _mm512_broadcast_i32x4(
      _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
  const __mmask16 mask = lane_mask(count);
  int64_t oh = q0 / Wq, ow = q0 % Wq;  // of the next pixel, stepped (no division per vector)
  for (int v = 0; v < T; ++v) {
    const int64_t q = q0 + 16 * v;
    if (q >= q_count) break;
    PYFASTCNN_REQUANT_ROW(0) PYFASTCNN_REQUANT_ROW(1) PYFASTCNN_REQUANT_ROW(2)
    PYFASTCNN_REQUANT_ROW(3) PYFASTCNN_REQUANT_ROW(4) PYFASTCNN_REQUANT_ROW(5)
    PYFASTCNN_REQUANT_ROW(6) PYFASTCNN_REQUANT_ROW(7) PYFASTCNN_REQUANT_ROW(8)
    PYFASTCNN_REQUANT_ROW(9) PYFASTCNN_REQUANT_ROW(10) PYFASTCNN_REQUANT_ROW(11)
    PYFASTCNN_REQUANT_ROW(12) PYFASTCNN_REQUANT_ROW(13) PYFASTCNN_REQUANT_ROW(14)
    PYFASTCNN_REQUANT_ROW(15)
    // a_j, lane L: int16 of channels 2j, 2j+1 at pixels 4L .. 4L+3.
    const __m512i a0 = _mm512_packs_epi32(y0, y1), a1 = _mm512_packs_epi32(y2, y3),
                  a2 = _mm512_packs_epi32(y4, y5), a3 = _mm512_packs_epi32(y6, y7),
                  a4 = _mm512_packs_epi32(y8, y9), a5 = _mm512_packs_epi32(y10, y11),
                  a6 = _mm512_packs_epi32(y12, y13), a7 = _mm512_packs_epi32(y14, y15);
    // b_k, lane L: bytes of channels 4k .. 4k+3 (major) at pixels 4L .. 4L+3, then pixel-major:
    // dword j of lane L = pixel 4L + j, channels 4k .. 4k+3.
    const auto pack = [&](__m512i x, __m512i y) {
      const __m512i b = kSigned ? _mm512_packs_epi16(x, y) : _mm512_packus_epi16(x, y);
      return _mm512_shuffle_epi8(b, to_pixel_major);
    };
    const __m512i b0 = pack(a0, a1), b1 = pack(a2, a3), b2 = pack(a4, a5), b3 = pack(a6, a7);
    const __m512i t0 = _mm512_unpacklo_epi32(b0, b1), t1 = _mm512_unpackhi_epi32(b0, b1);
    const __m512i t2 = _mm512_unpacklo_epi32(b2, b3), t3 = _mm512_unpackhi_epi32(b2, b3);
    // o_j, lane L: the 16 channels of pixel 4L + j.
    const __m512i o0 = _mm512_unpacklo_epi64(t0, t2), o1 = _mm512_unpackhi_epi64(t0, t2);
    const __m512i o2 = _mm512_unpacklo_epi64(t1, t3), o3 = _mm512_unpackhi_epi64(t1, t3);
    const int pixels = static_cast<int>(q_count - q < 16 ? q_count - q : 16);
    PYFASTCNN_STORE_PIXEL(0, 0) PYFASTCNN_STORE_PIXEL(0, 1) PYFASTCNN_STORE_PIXEL(0, 2)
    PYFASTCNN_STORE_PIXEL(0, 3) PYFASTCNN_STORE_PIXEL(1, 0) PYFASTCNN_STORE_PIXEL(1, 1)
    PYFASTCNN_STORE_PIXEL(1, 2) PYFASTCNN_STORE_PIXEL(1, 3) PYFASTCNN_STORE_PIXEL(2, 0)
    PYFASTCNN_STORE_PIXEL(2, 1) PYFASTCNN_STORE_PIXEL(2, 2) PYFASTCNN_STORE_PIXEL(2, 3)
    PYFASTCNN_STORE_PIXEL(3, 0) PYFASTCNN_STORE_PIXEL(3, 1) PYFASTCNN_STORE_PIXEL(3, 2)
    PYFASTCNN_STORE_PIXEL(3, 3)
  }
}
#undef PYFASTCNN_STORE_PIXEL
#undef PYFASTCNN_REQUANT_ROW

// Requantizes and stores one chunk's sums (sums[i][p]: channel oc0 + i < oc0 + count, virtual
// pixel q0 + p) into the NHWC output of image n. Shared by the block and group kernels.
template <int T, Int8OutKind KIND>
void store_chunk(const SparseInt8ConvArgs& a, const int32_t (*sums)[kMaxVectors * 16], int count,
                 int64_t oc0, int64_t n, int64_t q0) {
  const Int8Epilogue& epi = a.epi;
  // Fields as locals: stores through char* could alias `a`, which would reload them per pixel.
  const int64_t OC = a.g.OC, OW = a.g.OW, Wq = a.Wq, q_count = a.q_count;
  const int64_t pixel_bytes = OC * out_bytes(KIND);
  char* out_image = static_cast<char*>(a.out) + n * a.g.OH * OW * pixel_bytes;
  const __mmask16 mask = lane_mask(count);
  if constexpr (KIND == Int8OutKind::u8 || KIND == Int8OutKind::s8) {
    // Residual codes are per pixel: the transposed path below reads them (slower than this
    // one plus a separate add on output-bound layers; quantization.convert does not fuse
    // residual adds into sparse convs).
    if (!epi.residual) {
      requantize_bytes<T, KIND>(sums, count, oc0, epi, q0, q_count, Wq, OW, pixel_bytes,
                                out_image);
      return;
    }
  }
  const ChannelOperands c = channel_operands<KIND>(epi, oc0, mask);
  const OutputClamp clamp = output_clamp<KIND>(epi);
  int64_t oh = q0 / Wq, ow = q0 % Wq;  // of the next pixel, stepped
  for (int v = 0; v < T; ++v) {
    const int64_t q = q0 + 16 * v;
    if (q >= q_count) break;
    __m512i r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_load_si512(sums[i] + 16 * v);
    transpose16(r);
    const int pixels = static_cast<int>(q_count - q < 16 ? q_count - q : 16);
    for (int p = 0; p < pixels; ++p) {
      if (ow < OW) {
        char* row = out_image + (oh * OW + ow) * pixel_bytes;
        const uint8_t* res_row =
            epi.residual ? epi.residual + ((n * a.g.OH + oh) * OW + ow) * epi.residual_ld
                         : nullptr;
        store_tile_vector<KIND>(_mm512_add_epi32(r[p], c.offset), mask, c.scale, c.bias, clamp, epi,
                                row, oc0, res_row);
      }
      if (++ow == Wq) {
        ow = 0;
        ++oh;
      }
    }
  }
}

}  // namespace
}  // namespace avx512_vnni
}  // namespace pyfastcnn
