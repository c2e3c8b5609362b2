// Argument structs and per-ISA kernel prototypes. Plain data only: this header is included by
// ISA units, so it must not define inline functions. Preconditions are checked in ops.cc before
// any kernel runs; kernels trust these structs.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pyfastcnn {

// ---- INT8 GEMM: C[M,N] = epilogue(A[M,K] (uint8) x B[K,N] (int8) + col_offset[N]) ------------
// A is unsigned: signed activations are shifted by +128 beforehand and the shift is undone by
// col_offset (see ops.cc). Integer sums are exact modulo 2^32. B is packed once into an
// ISA-specific layout (pack_b, which also returns the column sums of B) and reused.
struct Int8GemmShape {
  int64_t M, N, K;
};
enum class Int8OutKind : int { i32 = 0, f32 = 1, s8 = 2, u8 = 3 };
// acc = sum_k a[m,k] * b[k,n] + col_offset[n]                    (int32, wraps)
// i32 out: acc
// y = clamp(acc * scale[n] + bias[n] [+ residual term], clamp_min, clamp_max)   (float32)
// f32 out: y
// s8/u8:   q = saturate(round_half_even(y)): for 8-bit outputs the caller has divided scale,
//          bias, the clamp bounds and residual_scale by the output scale and added the output
//          zero point to bias and the bounds (make_epilogue), so y is already the output code:
//          two float operations per value fewer than dividing and shifting y here.
// residual term (a fused residual add, when `residual` is set):
//          residual_scale * (r[m, n] - residual_zero_point), r the code at
//          residual + m * residual_ld + n (int8 when residual_signed, else uint8)
struct Int8Epilogue {
  Int8OutKind kind;
  const int32_t* col_offset;  // [N] or null
  const float* scale;         // [N] (float and 8-bit outputs)
  const float* bias;          // [N] or null
  float clamp_min, clamp_max;
  const uint8_t* residual;  // null: no residual add
  int64_t residual_ld;
  bool residual_signed;
  float residual_scale;
  int32_t residual_zero_point;
};
struct Int8GemmArgs {
  const uint8_t* a;  // unsigned bytes, or int8 when a_signed (kernels with signed_a only)
  int64_t lda;
  const void* packed_b;
  Int8GemmShape shape;
  void* c;  // element type given by epi.kind
  int64_t ldc;
  Int8Epilogue epi;
  bool a_signed;  // A holds int8: the kernel adds 128 itself (col_offset accounts for it)
  // Column sums of B ([N]) or null: lets a kernel multiply int8 A as signed and add the
  // 128 * sum_k b[k][n] that the +128 shift would have contributed.
  const int32_t* b_col_sums;
};
// ---- INT8 convolution as an implicit GEMM (no im2col) ---------------------------------------
// The source is an NHWC uint8 image padded so that every tap of every output pixel is inside
// it (padding holds the zero point). For output pixel (n, oh, ow) of group grp, the GEMM row is
// the concatenation of `num_segments` byte runs, run s starting at
//   src + ((n * Hs + oh * stride_h) * Ws + ow * stride_w) * Cs + grp * cg4 + segment_offset[s]
// each segment_len bytes long (a multiple of 4); B rows follow the same order.
struct Int8ConvArgs {
  const uint8_t* src;
  int64_t Hs, Ws, Cs;      // padded source image
  int64_t N, OH, OW, stride_h, stride_w;
  int64_t groups, cg4, ocg;  // channels per group as packed (multiple of 4); outputs per group
  const int64_t* segment_offset;
  int64_t num_segments, segment_len;
  const void* packed_b;  // groups blocks, `group_bytes` apart
  int64_t group_bytes;
  void* out;  // NHWC [N, OH, OW, groups * ocg], typed by epi.kind
  Int8Epilogue epi;  // arrays over all groups * ocg channels
};
using Int8ConvFn = void (*)(const Int8ConvArgs& args);

// Compact kernel rows for convs with few channels (groups == 1, no horizontal dilation): a
// conv weight packed with K = KH * KW * c4 rows (c4 = C rounded up to 4, row
// (kh * KW + kw) * c4 + c) is repacked for a source whose pixels hold `stack` image rows of C
// channels each (pixel (h, w) = C bytes of rows h, h + 1, ..., h + stack - 1: Cs = stack * C),
// so that one segment of Lq bytes (a multiple of 4, >= KW * stack * C) covers `stack` kernel
// rows: K = ceil(KH / stack) * Lq rows, row j * Lq + kw * stack * C + s * C + c holding weight
// (kh = j * stack + s, kw, c), the others (kh >= KH, or past KW * stack * C in the segment)
// zero. The bytes a segment reads past its KW pixels belong to the next pixel and meet those
// zeros. stack = 1, Lq = KW * C rounded up to 4: the 3x7 stem reduces over 7 * 24 bytes
// instead of 49 * 4; stack = 3, Lq = 64 (AMX reads whole 64-byte chunks in place): over
// 3 * 64. `out` holds packed_bytes(K, N).
using Int8RepackConvRowsFn = void (*)(const void* packed, int64_t KH, int64_t KW, int64_t C,
                                      int64_t N, int64_t stack, int64_t Lq, void* out);

// ---- FP32 convolution as an implicit GEMM -----------------------------------------------------
// Source as in Int8ConvArgs, in floats (no channel padding), zero-padded. Segment s is
// segment_len[s] floats at segment_offset[s]; k-block b covers segments
// [block_begin[b], block_begin[b + 1]): kernels finish one block for a whole task before the
// next, keeping a block of the packed weights in cache (partial sums wait in `out`).
// out = clamp(acc + bias, clamp_min, clamp_max) with NaN passed through.
struct F32ConvArgs {
  const float* src;
  int64_t Hs, Ws, Cs;
  int64_t N, OH, OW, stride_h, stride_w;
  int64_t groups, cg, ocg;
  const int64_t* segment_offset;  // in floats
  const int64_t* segment_len;
  int64_t num_segments;
  const int64_t* block_begin;  // num_blocks + 1 entries
  int64_t num_blocks;
  const float* packed_b;  // groups blocks, group_floats apart, from f32_pack_b
  int64_t group_floats;
  float* out;  // NHWC [N * OH * OW, groups * ocg]
  const float* bias;  // [groups * ocg] or null
  float clamp_min, clamp_max;
};
// Block-sparse FP32 conv: the weight of each group is cut into panels of 32 output channels and
// only the reduction rows k where a panel has a non-zero are kept (32 floats each, zero beyond
// the group's channels). Source and output as in F32ConvArgs. Row j of panel p is used at
// source offset row_offset[j] from the pixel's base (which includes grp * cg).
struct F32BlockSparseArgs {
  const float* src;
  int64_t Hs, Ws, Cs;
  int64_t N, OH, OW, stride_h, stride_w;
  int64_t groups, cg, ocg;
  const int64_t* panel_row_ptr;  // [groups * panels_per_group + 1]
  const int64_t* row_offset;     // per kept row, in floats
  const float* rows;             // kept rows, 32 floats each
  float* out;                    // NHWC [N * OH * OW, groups * ocg]
  const float* bias;
  float clamp_min, clamp_max;
};
using F32BlockSparseFn = void (*)(const F32BlockSparseArgs& args);
constexpr int64_t kSparseBlockCols = 32;

// Depthwise FP32 conv (groups == C == OC) on NHWC-contiguous input (no padded copy: taps outside
// the image are skipped); weight packed as [KH * KW][C]; out NHWC; out = clamp(sum + bias) with
// NaN passed through.
struct F32DepthwiseArgs {
  const float* src;
  int64_t H, W, C;
  int64_t N, OH, OW, stride_h, stride_w, KH, KW, dil_h, dil_w, pad_top, pad_left;
  const float* weight;  // [KH * KW][C]
  const float* bias;    // [C] or null
  float clamp_min, clamp_max;
  float* out;
};
using F32DepthwiseFn = void (*)(const F32DepthwiseArgs& args);

// BF16 convolution as an implicit GEMM: F32ConvArgs' scheme with bfloat16 source and weights
// (FP32 accumulation and output). Channels per group are padded to an even count (cg2) and every
// segment length is even, so reduction pairs never straddle segments.
struct Bf16ConvArgs {
  const uint16_t* src;  // bf16 NHWC, zero-padded, Cs = groups * cg2
  int64_t Hs, Ws, Cs;
  int64_t N, OH, OW, stride_h, stride_w;
  int64_t groups, cg2, ocg;
  const int64_t* segment_offset;  // in elements
  const int64_t* segment_len;     // even
  int64_t num_segments;
  const int64_t* block_begin;
  int64_t num_blocks;
  const uint16_t* packed_b;  // groups blocks, group_elems apart, from bf16_pack_b
  int64_t group_elems;
  float* out;  // NHWC [N * OH * OW, groups * ocg]
  const float* bias;
  float clamp_min, clamp_max;
};
using Bf16PackedElemsFn = size_t (*)(int64_t K, int64_t N);
using Bf16PackBFn = void (*)(const float* b, int64_t ldb, int64_t K, int64_t N, uint16_t* packed);
using Bf16ConvFn = void (*)(const Bf16ConvArgs& args);
// dst[i] = bfloat16(src[i]) for i < n, round to nearest even.
using Bf16ConvertFn = void (*)(const float* src, int64_t n, uint16_t* dst);

using F32PackedFloatsFn = size_t (*)(int64_t K, int64_t N);
using F32PackBFn = void (*)(const float* b, int64_t ldb, int64_t K, int64_t N, float* packed);
using F32ConvFn = void (*)(const F32ConvArgs& args);

using Int8PackedBytesFn = size_t (*)(int64_t K, int64_t N);
using Int8PackBFn = void (*)(const int8_t* b, int64_t ldb, int64_t K, int64_t N, void* packed);
// A kernel either applies every epilogue kind itself (fused) or only i32 (then ops.cc runs
// the epilogue as a second pass).
using Int8GemmFn = void (*)(const Int8GemmArgs& args);

// ---- INT8 depthwise convolution (groups == C == OC) ---------------------------------------
// Straight from the NHWC input (no padded copy): taps outside the image read zero_point, so the
// zero-point correction (epi.col_offset = -zero_point * sum of the channel's weights) is exact.
// acc[c] = sum_t weight[t][c] * x[pixel of tap t][c], x as uint8, or int8 when x_signed;
// out = the Int8Epilogue of acc at element c of output pixel m = (n * OH + oh) * OW + ow.
struct Int8DepthwiseArgs {
  const uint8_t* x;  // NHWC [N, H, W, C]
  bool x_signed;
  uint8_t zero_point;  // the input's zero-point code (an int8 code when x_signed)
  int64_t N, H, W, C, OH, OW;
  int64_t KH, KW, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left;
  // [KH * KW][Cp] weights as int16 pairs (w, 0) (int32 w & 0xFFFF): one vpmaddwd with a byte
  // widened to int32, (x, 0) or (x, sign), gives x * w exactly. Cp = C rounded up to
  // kInt8DepthwiseCBlock, zero beyond C.
  const int32_t* weight;
  int64_t Cp;
  void* out;  // NHWC [N, OH, OW, C], typed by epi.kind
  Int8Epilogue epi;
};
constexpr int64_t kInt8DepthwiseCBlock = 64;
using Int8DepthwiseFn = void (*)(const Int8DepthwiseArgs& args);

// ---- direct 2-D convolution, float32 ----------------------------------------------------------
// Input and output are addressed through element strides (NCHW, channels_last or any view).
// Output size is given explicitly (so asymmetric "same" padding needs no bottom/right pad);
// taps that fall outside the input read zero. Epilogue: out = clamp(acc + bias, lo, hi), with
// NaN passed through.
struct Conv2dGeometry {
  int64_t N, C, H, W;      // input
  int64_t OC, OH, OW;      // output
  int64_t KH, KW;
  int64_t stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups;
};
struct Conv2dEpilogue {
  const float* bias;  // [OC] or null
  float clamp_min, clamp_max;
};
struct Conv2dIO {
  const float* input;
  int64_t in_strides[4];  // N, C, H, W
  float* output;
  int64_t out_strides[4];
};
// ---- Sparse INT8 convolution (pruned + quantized weights) -----------------------------------
// Weight: per output channel, a list of blocks, each 4 consecutive input channels of its group
// at one kernel tap: block_k[j] = c4 * KH * KW + kh * KW + kw (c4: channel quad within the
// group), values32[j] = the 4 int8 weights (channels 4*c4 .. 4*c4+3, zero past the group's
// channels) as one little-endian int32, so one vpdpbusd lane consumes a block.
//
// Vector kernels read "virtual planes" (as SparsePlanesArgs, with 4 channels per pixel): per
// image, channel quad cq and stride phase (ph, pw), a zero-point-padded plane of Hq x Wq pixels
// of 4 bytes, plane[i][j] = x[i*sh + ph - pad_top][j*sw + pw - pad_left][4cq .. 4cq+3] (+128
// for int8 input). Output pixel (oh, ow) is virtual pixel q = oh * Wq + ow, and block k reads
// planes + image + group_offset(oc) + k_offset[k] + 4 * q: 16 consecutive q are 64 contiguous bytes
// (16 pixels x 4 channels), one vpdpbusd with the block's weights broadcast. Columns ow >= OW
// are computed and dropped.
//
// Group layout (unstructured weights): each output channel's non-zeros in groups of four
// arbitrary weights (the last group padded with zero weights): block_k[4j + i] is the index
// (ci * KH + kh) * KW + kw of weight i of group j, values32[j] its 4 weights. The planes then
// hold one byte per pixel (one plane per channel: quad_bytes is a channel's bytes), and the
// kernel interleaves the 4 weights' activation bytes before each vpdpbusd; k_offset has one
// entry per weight index.
constexpr int64_t kSparseInt8WindowLd = 128;  // window row: a task's pixels (tile <= 128)
struct SparseInt8ConvArgs {
  // The input and how it becomes planes (kernels fill `planes` first; ref::
  // sparse_int8_fill_planes does it for any geometry).
  const uint8_t* x;           // NHWC [N, H, W, C], unsigned view: byte ^ flip
  Conv2dGeometry g;
  uint8_t flip, zero_point;   // zero_point: the kernel's (unsigned) zero point, pads planes
  int64_t Hq, Wq, plane_pixels, quad_bytes, group_bytes, image_bytes;  // quad_bytes: per plane set
  uint8_t* planes;            // N * image_bytes + 128 bytes (slack read by the last vectors)
  // 1x1 unpadded convs (groups 1): no planes; each task transposes its pixels' channels into a
  // per-thread window, rows of kSparseInt8WindowLd pixels x one channel (groups) or quad
  // (blocks, 4 bytes per pixel), quad_bytes = that row's bytes, Wq = OW. It stays in cache
  // instead of a planes round trip through memory. Images whose rows are all read (H = OH *
  // stride) are merged into one tall image (N = 1).
  bool window;
  int64_t q_count;            // OH * Wq virtual pixels per image
  int64_t tile;               // virtual pixels per task, a multiple of 16, <= 128
  const int64_t* row_ptr;     // [OC + 1] into values32 (blocks or groups)
  const int32_t* block_k;
  const int32_t* values32;
  const int32_t* k_offset;    // [cq * KH * KW] (groups: [C/groups * KH * KW]) byte offset of
                              // index k within a group's planes
  void* out;                  // NHWC [N, OH, OW, OC], typed by epi.kind
  Int8Epilogue epi;           // arrays over OC (col_offset holds the zero-point correction)
};
using SparseInt8ConvFn = void (*)(const SparseInt8ConvArgs& args);
// Sparse weight, CSR over output channels: row oc holds col_idx[row_ptr[oc] .. row_ptr[oc+1])
// with col = (ci_in_group * KH + kh) * KW + kw.
struct CsrWeight {
  const int64_t* row_ptr;
  const int32_t* col_idx;
  const float* values;
};
// Sparse conv over "virtual" output planes: for virtual pixel q = oh * Wq + ow < q_count with
// ow < OW, out[n * out_strides[0] + oc * out_strides[1] + oh * out_strides[2] + ow *
// out_strides[3]] = clamp(bias[oc] + sum_i values[i] * src[n * image_stride + offset[i] + q]),
// i over the non-zeros of oc. ops.cc lays out src (zero-padded, stride-phase-split NCHW planes)
// so that every tap is a constant offset from q; `src` must be readable up to offset + q_count
// rounded up to 64. The input channels are cut into `slices` slices: the non-zeros of output
// channel oc in slice j are [bounds[j * OC + oc], bounds[(j + 1) * OC + oc]) (rows sorted by
// column). A kernel sums slice by slice over all its channels, so the input it reads at a time
// (one slice's channels around a pixel tile) stays in L1, keeping the partial sums in a
// per-thread buffer.
// Window mode (window_channels > 0: a 1x1 stride-1 unpadded conv, groups 1, q = oh * OW + ow,
// of a channels_last input, or of an NCHW one whose planes are not a multiple of 16 floats):
// src is the input itself, channel c of pixel q of image n at src[n * image_stride +
// q * window_px + c * window_ch], and there are no planes: a task copies the channels
// [j * slice_channels, (j + 1) * slice_channels) of its pixels into a buffer
// [channel - j * slice_channels][kSparseWindowLd] slice by slice (transposing channels_last),
// and offset[i] is the non-zero's row in that buffer times kSparseWindowLd.
constexpr int64_t kSparseWindowLd = 128;
struct SparsePlanesArgs {
  const float* src;
  int64_t N, image_stride, q_count, Wq;
  int64_t window_channels, window_px, window_ch, slice_channels;  // window mode (see above)
  int64_t OC, slices;
  const int64_t* bounds;  // [(slices + 1) * OC]
  const int64_t* offset;   // per non-zero, in floats
  const float* values;
  const float* bias;  // [OC] or null
  float clamp_min, clamp_max;
  float* out;  // [N, OC, OH, OW] with these strides (any layout)
  int64_t OW, out_strides[4];
};
using SparsePlanesFn = void (*)(const SparsePlanesArgs& args);

using SparseConv2dCsrFn = void (*)(const Conv2dIO& io, const Conv2dGeometry& g, const CsrWeight& w,
                                   const Conv2dEpilogue& epi);
// Dense weight [OC, C/groups, KH, KW], contiguous.
using Conv2dDenseFn = void (*)(const Conv2dIO& io, const Conv2dGeometry& g, const float* weight,
                               const Conv2dEpilogue& epi);

// ---- INT8 elementwise ops ------------------------------------------------------------------
// Quantized add over n elements in memory order (uint8, or int8 when is_signed), all float32
// operations rounded one by one (these units are compiled with -ffp-contract=off: no FMA):
//   y = (ka * a[i] + c) + kb * b[i];   y = min(max(y, lo), hi);   out[i] = round_half_even(y)
// lo/hi are integers inside the code range (lo = max(qmin, out_zero_point) for ReLU), so clamping
// before rounding equals clamping after.
struct QuantAddArgs {
  const uint8_t* a;
  const uint8_t* b;
  uint8_t* out;
  int64_t n;
  bool is_signed;
  float ka, kb, c, lo, hi;
};
using QuantAddFn = void (*)(const QuantAddArgs& args);
// Per-tensor quantization of float32 x: v = x / scale (a true division); NaN -> 0;
// v = min(max(v, lo), hi) with lo = qmin - zero_point, hi = qmax - zero_point;
// out = round_half_even(v) + zero_point (so +-inf saturate and NaN gives zero_point).
// transpose: x is [outer][channels][pixels] and out [outer][pixels][channels] (NCHW -> NHWC);
// else x and out are n = outer * channels * pixels elements in the same order.
struct QuantizeArgs {
  const float* x;
  uint8_t* out;
  int64_t outer, channels, pixels;
  bool transpose;
  bool is_signed;  // int8 codes, else uint8
  float scale, lo, hi;
  int32_t zero_point;
};
using QuantizeFn = void (*)(const QuantizeArgs& args);

// ---- Layout --------------------------------------------------------------------------------
// Float transpose: out[c * out_ld + j] = in[j * in_ld + c] for j < rows, c < cols (channels_last
// pixels <-> NCHW rows, for the kernels that read or write one layout only).
struct TransposeF32Args {
  const float* in;
  float* out;
  int64_t rows, cols, in_ld, out_ld;
};
using TransposeF32Fn = void (*)(const TransposeF32Args& args);

// ---- INT8 pooling on NHWC codes ------------------------------------------------------------
// in [N, H, W, C] and out [N, OH, OW, C], both dense NHWC; bytes are uint8 codes, or int8 when
// is_signed. Scale and zero point pass through (the ops work on codes).
//
// Max pooling: out[n, oh, ow, c] = max of in[n, h, w, c] over the window's taps inside the
// image: h = oh * stride_h - pad_h + kh * dil_h for kh in [kh_begin[oh], kh_end[oh]), w likewise
// (pool_ops.cc drops the taps that fall in the padding). A window with no tap left (possible
// with dilation) gives the lowest code, as PyTorch's quantized max pool does.
struct QuantMaxPoolArgs {
  const uint8_t* in;
  uint8_t* out;
  int64_t N, H, W, C, OH, OW;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  const int64_t* kh_begin;  // [OH]
  const int64_t* kh_end;
  const int64_t* kw_begin;  // [OW]
  const int64_t* kw_end;
  bool is_signed;
};
using QuantMaxPoolFn = void (*)(const QuantMaxPoolArgs& args);
// Exact floor(n / count) for 0 <= n <= 255 * count by a multiply and a shift:
// floor(n / count) = (n * mul) >> shift (64-bit product; mul < 2^32), see pool_ops.cc.
struct PoolDivisor {
  int32_t count;
  uint32_t mul;
  uint32_t shift;
};
// Adaptive average pooling: window (oh, ow) covers rows [h_start[oh], h_end[oh]) and columns
// [w_start[ow], w_end[ow]) (PyTorch's floor/ceil rule, computed by pool_ops.cc); with s the
// int32 sum of the window's codes and k = divisor[oh * OW + ow].count its pixel count,
// out = round_half_even(s / k), computed in integers (int8: on s + 128 k, then - 128).
struct QuantAdaptiveAvgPoolArgs {
  const uint8_t* in;
  uint8_t* out;
  int64_t N, H, W, C, OH, OW;
  const int64_t* h_start;
  const int64_t* h_end;
  const int64_t* w_start;
  const int64_t* w_end;
  const PoolDivisor* divisor;  // [OH * OW]
  bool is_signed;
};
using QuantAdaptiveAvgPoolFn = void (*)(const QuantAdaptiveAvgPoolArgs& args);

#define PYFASTCNN_DECLARE_INT8_GEMM                                                    \
  size_t int8_packed_b_bytes(int64_t K, int64_t N);                                   \
  void int8_pack_b(const int8_t* b, int64_t ldb, int64_t K, int64_t N, void* packed); \
  void int8_gemm(const Int8GemmArgs& args);

namespace ref {
PYFASTCNN_DECLARE_INT8_GEMM
// Epilogue of output row m over columns [n0, n0 + count): acc[j] is column n0 + j, written to
// c_row[n0 + j] (c_row points at the row start, typed by epi.kind).
void int8_epilogue_row(const int32_t* acc, int64_t n0, int64_t count, const Int8Epilogue& epi,
                       void* c_row, int64_t m);
void sparse_conv2d_csr(const Conv2dIO& io, const Conv2dGeometry& g, const CsrWeight& w,
                       const Conv2dEpilogue& epi);
void conv2d_dense(const Conv2dIO& io, const Conv2dGeometry& g, const float* weight,
                  const Conv2dEpilogue& epi);
// Sparse INT8 conv straight from NHWC input x (unsigned view: byte ^ flip; taps outside the
// image and channels past the group's read zero_point), weight blocks as in SparseInt8ConvArgs,
// out NHWC typed by epi.kind.
void sparse_int8_conv2d(const uint8_t* x, uint8_t flip, uint8_t zero_point,
                        const Conv2dGeometry& g, const int64_t* row_ptr, const int32_t* block_k,
                        const int32_t* values32, const Int8Epilogue& epi, void* out);
// Fills args.planes from args.x (any channel count; the vector kernels' fallback).
void sparse_int8_fill_planes(const SparseInt8ConvArgs& args);
// The same for weights in the group layout (block_k: 4 weight indices per group).
void sparse_int8_group_conv2d(const uint8_t* x, uint8_t flip, uint8_t zero_point,
                              const Conv2dGeometry& g, const int64_t* row_ptr,
                              const int32_t* weight_k, const int32_t* values32,
                              const Int8Epilogue& epi, void* out);
void quantized_add(const QuantAddArgs& args);
void quantize(const QuantizeArgs& args);
void quantized_max_pool2d(const QuantMaxPoolArgs& args);
void quantized_adaptive_avg_pool2d(const QuantAdaptiveAvgPoolArgs& args);
void int8_depthwise(const Int8DepthwiseArgs& args);
void transpose_f32(const TransposeF32Args& args);
}  // namespace ref
namespace avx2 {
PYFASTCNN_DECLARE_INT8_GEMM
void int8_conv(const Int8ConvArgs& args);
void int8_repack_conv_rows(const void* packed, int64_t KH, int64_t KW, int64_t C, int64_t N,
                           int64_t stack, int64_t Lq, void* out);
void sparse_conv_planes(const SparsePlanesArgs& args);
size_t f32_packed_floats(int64_t K, int64_t N);
void f32_pack_b(const float* b, int64_t ldb, int64_t K, int64_t N, float* packed);
void conv2d_f32(const F32ConvArgs& args);
void conv2d_f32_block_sparse(const F32BlockSparseArgs& args);
void depthwise_f32(const F32DepthwiseArgs& args);
void sparse_int8_conv(const SparseInt8ConvArgs& args);
void sparse_int8_group_conv(const SparseInt8ConvArgs& args);  // group layout
void int8_depthwise(const Int8DepthwiseArgs& args);
void quantized_add(const QuantAddArgs& args);
void quantize(const QuantizeArgs& args);
void quantized_max_pool2d(const QuantMaxPoolArgs& args);
void quantized_adaptive_avg_pool2d(const QuantAdaptiveAvgPoolArgs& args);
void transpose_f32(const TransposeF32Args& args);
}
namespace avx512 {
size_t f32_packed_floats(int64_t K, int64_t N);
void sparse_conv_planes(const SparsePlanesArgs& args);
void f32_pack_b(const float* b, int64_t ldb, int64_t K, int64_t N, float* packed);
void conv2d_f32(const F32ConvArgs& args);
void conv2d_f32_block_sparse(const F32BlockSparseArgs& args);
void depthwise_f32(const F32DepthwiseArgs& args);
void quantized_add(const QuantAddArgs& args);
void quantize(const QuantizeArgs& args);
void quantized_max_pool2d(const QuantMaxPoolArgs& args);
void quantized_adaptive_avg_pool2d(const QuantAdaptiveAvgPoolArgs& args);
void transpose_f32(const TransposeF32Args& args);
}
namespace avx512_vnni {
PYFASTCNN_DECLARE_INT8_GEMM
void int8_conv(const Int8ConvArgs& args);
void int8_repack_conv_rows(const void* packed, int64_t KH, int64_t KW, int64_t C, int64_t N,
                           int64_t stack, int64_t Lq, void* out);
void sparse_int8_conv(const SparseInt8ConvArgs& args);
void sparse_int8_group_conv(const SparseInt8ConvArgs& args);  // group layout
void int8_depthwise(const Int8DepthwiseArgs& args);
}
namespace avx512_amx {
// B in avx512_vnni's packed layout plus slack for the last tile (see the kernel file).
PYFASTCNN_DECLARE_INT8_GEMM
void int8_conv(const Int8ConvArgs& args);
void int8_repack_conv_rows(const void* packed, int64_t KH, int64_t KW, int64_t C, int64_t N,
                           int64_t stack, int64_t Lq, void* out);
// BF16 weights in avx512_bf16's packed layout.
void conv2d_bf16(const Bf16ConvArgs& args);
}
namespace avx512_bf16 {
size_t bf16_packed_elems(int64_t K, int64_t N);  // K even
void bf16_pack_b(const float* b, int64_t ldb, int64_t K, int64_t N, uint16_t* packed);
void conv2d_bf16(const Bf16ConvArgs& args);
void to_bf16_n(const float* src, int64_t n, uint16_t* dst);
}

}  // namespace pyfastcnn
