// Validated native entry points, called by the bindings. Each checks its own preconditions
// (dtypes, ranks, shapes, index ranges) and throws std::invalid_argument before any kernel runs.
#pragma once
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "pyfastcnn/isa.h"
#include "pyfastcnn/kernels.h"
#include "pyfastcnn/tensor_ref.h"

namespace pyfastcnn {

struct ConvParams {
  int64_t stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups;
  float clamp_min, clamp_max;
};

// ---- INT8 -----------------------------------------------------------------------------------
// c[M,N] int32 = a[M,K] int8 @ b[K,N] int8, B packed per call. Row-major, unit inner stride.
void int8_gemm(const TensorRef& a, const TensorRef& b, const TensorRef& c);

// Bytes of B [K, N] packed for the INT8 kernel of level `layout`, a multiple of 64 (groups are
// packed back to back).
size_t int8_packed_bytes(Isa layout, int64_t K, int64_t N);
// Packs b [K, N] int8 for `layout` into packed (uint8 [int8_packed_bytes]) and writes the
// column sums of b to col_sums (int32 [N]).
void int8_pack(Isa layout, const TensorRef& b, const TensorRef& packed, const TensorRef& col_sums);

// Quantized activations x (uint8 or int8) with x_scale, x_zero_point; weights int8 symmetric
// with per-column scale w_scale[n]; bias float. With acc = sum_k (x - x_zero_point) * w:
//   y = clamp(acc * (x_scale * w_scale[n]) + bias[n], clamp_min, clamp_max)
// out: float32 y, or int8/uint8 saturate(round_half_even(y / out_scale) + out_zero_point),
// or (out_kind i32, no scales) acc itself.
struct QuantParams {
  int32_t x_zero_point;
  float x_scale;
  Int8OutKind out_kind;
  float clamp_min, clamp_max;
  float out_scale;
  int32_t out_zero_point;
  // Fused residual add (convs only; see Int8Epilogue): int8/uint8 codes shaped and laid out like
  // `out` (NHWC), added as residual_scale * (r - residual_zero_point) before the clamp.
  const TensorRef* residual = nullptr;
  float residual_scale = 1.0f;
  int32_t residual_zero_point = 0;
};

// out[M, N] = epilogue(x[M, K] @ B), B packed by int8_pack for `layout`.
void int8_linear(const TensorRef& x, Isa layout, const TensorRef& packed,
                 const TensorRef& col_sums, int64_t K, int64_t N, const TensorRef* w_scale,
                 const TensorRef* bias, const QuantParams& q, const TensorRef& out);

// Quantized conv, NHWC: x [N, C, H, W] and out [N, OC, OH, OW] both channels_last-contiguous.
// packed holds `groups` consecutive blocks, group g = B_g [KH*KW*C/groups, OC/groups] with
// rows ordered (kh, kw, c). Padding reads x_zero_point (real zero).
void int8_conv2d(const TensorRef& x, Isa layout, const TensorRef& packed,
                 const TensorRef& col_sums, int64_t C_per_group, int64_t KH, int64_t KW,
                 const TensorRef& w_scale,
                 const TensorRef* bias, const ConvParams& p, const QuantParams& q,
                 const TensorRef& out);

// Quantized depthwise conv (groups == C == OC), same math, arguments and layouts as int8_conv2d
// but for the weight: int32 [KH * KW, Cp] (Cp = C rounded up to kInt8DepthwiseCBlock, zero past
// C; row kh * KW + kw holds the tap's weight per channel) and col_sums [C] its per-channel sums.
void int8_depthwise_conv2d(const TensorRef& x, const TensorRef& weight, const TensorRef& col_sums,
                           int64_t KH, int64_t KW, const TensorRef& w_scale,
                           const TensorRef* bias, const ConvParams& p, const QuantParams& q,
                           const TensorRef& out);

// Quantized conv with a sparse weight in 4-channel blocks (see SparseInt8ConvArgs): row_ptr
// [OC + 1] (int64), block_k [blocks] (int32), values [4 * blocks] (int8), col_sums [OC] (int32,
// the sum of each output channel's weights). Same math, arguments and layouts as int8_conv2d.
// Group layout (unstructured weights): block_k and values both [4 * groups], one weight index
// (ci * KH + kh) * KW + kw per weight, row_ptr over groups; told apart by the sizes.
void sparse_int8_conv2d(const TensorRef& x, const TensorRef& row_ptr, const TensorRef& block_k,
                        const TensorRef& values, const TensorRef& col_sums, int64_t C_per_group,
                        int64_t KH, int64_t KW, const TensorRef& w_scale, const TensorRef* bias,
                        const ConvParams& p, const QuantParams& q, const TensorRef& out);

// ---- INT8 elementwise ----------------------------------------------------------------------
// out = quantized a + b (QuantAddArgs in kernels.h gives the exact float32 math): a, b, out of
// one dtype (uint8 or int8), one shape and the same dense strides (any dim order).
void quantized_add(const TensorRef& a, const TensorRef& b, const TensorRef& out, double a_scale,
                   int32_t a_zero_point, double b_scale, int32_t b_zero_point, double out_scale,
                   int32_t out_zero_point, bool relu);
// out (uint8/int8) = codes of x (float32), QuantizeArgs' math with float32(scale). x and out
// dense with the same strides, or x NCHW-contiguous and out channels_last (fused transpose).
void quantize_per_tensor(const TensorRef& x, const TensorRef& out, double scale,
                         int32_t zero_point);

// ---- INT8 pooling ----------------------------------------------------------------------------
// q and out: uint8/int8 [N, C, H, W] / [N, C, OH, OW], dense channels_last, same dtype; the codes
// keep q's scale and zero point. Max pool: F.max_pool2d's geometry rules (padding at most half
// the kernel, PyTorch's output size with ceil_mode). Adaptive average pool: the output size is
// out's; see QuantAdaptiveAvgPoolArgs in kernels.h for the windows and the rounding.
void quantized_max_pool2d(const TensorRef& q, const TensorRef& out, int64_t KH, int64_t KW,
                          int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                          int64_t dil_h, int64_t dil_w, bool ceil_mode);
void quantized_adaptive_avg_pool2d(const TensorRef& q, const TensorRef& out);

// A vectorized sparse conv's preparation for one CSR weight (the checked indices turned into
// slice bounds and per-non-zero offsets, see SparsePlanesArgs), kept between calls: the caller
// gives one slot per weight and a new slot when the weight's arrays change. It is reused while
// the layout it was made for (geometry, input layout, nnz, the arrays' addresses) is the same.
// Its offsets were checked against that layout, so a reused plan never reads outside the
// input. (On small maps the preparation cost up to 40% of a call.)
struct SparsePlanSlot {
  std::mutex mutex;
  std::vector<int64_t> key;
  std::shared_ptr<const std::vector<int64_t>> plan;  // bounds, then offsets
};

// output[N,OC,OH,OW] = clamp(conv2d(input, W) + bias). W in CSR (see kernels.h), shape
// [OC, C/groups, KH, KW]. input/output: any strides. `plan`: optional, see SparsePlanSlot.
void sparse_conv2d_csr(const TensorRef& input, const TensorRef& row_ptr, const TensorRef& col_idx,
                       const TensorRef& values, const TensorRef* bias, int64_t OC,
                       int64_t C_per_group, int64_t KH, int64_t KW, const ConvParams& p,
                       const TensorRef& output, SparsePlanSlot* plan = nullptr);

// FP32 conv weights [OC, C/groups, KH, KW] packed once for the implicit-GEMM kernel of level
// `layout` (only levels that have one: f32_conv_kernel). Size in floats, groups included.
size_t conv2d_f32_packed_floats(Isa layout, int64_t OC, int64_t C_per_group, int64_t KH,
                                int64_t KW, int64_t groups);
void conv2d_f32_pack(Isa layout, const TensorRef& weight, int64_t groups, const TensorRef& packed);
// output = clamp(conv2d(input, W) + bias) with W packed by conv2d_f32_pack.
void conv2d_f32_packed(const TensorRef& input, Isa layout, const TensorRef& packed, int64_t OC,
                       int64_t C_per_group, int64_t KH, int64_t KW, const TensorRef* bias,
                       const ConvParams& p, const TensorRef& output);

// BF16 conv: FP32 weights [OC, C/groups, KH, KW] packed as bfloat16 for the kernel of level
// `layout` (bf16_conv_kernel), FP32 input rounded to bfloat16 on the way in, FP32 accumulation
// and output: output = clamp(conv2d(bf16(input), bf16(W)) + bias).
size_t conv2d_bf16_packed_elems(Isa layout, int64_t OC, int64_t C_per_group, int64_t KH,
                                int64_t KW, int64_t groups);
void conv2d_bf16_pack(Isa layout, const TensorRef& weight, int64_t groups, const TensorRef& packed);
void conv2d_bf16_packed(const TensorRef& input, Isa layout, const TensorRef& packed, int64_t OC,
                        int64_t C_per_group, int64_t KH, int64_t KW, const TensorRef* bias,
                        const ConvParams& p, const TensorRef& output);

// Block-sparse weight (see F32BlockSparseArgs): for each group and panel of 32 output channels,
// panel_row_ptr gives its kept rows, k_index their reduction index k = (kh * KW + kw) * cg + c,
// rows their 32 values. Shape [OC, C_per_group, KH, KW]. input/output: any strides.
void sparse_conv2d_block(const TensorRef& input, const TensorRef& panel_row_ptr,
                         const TensorRef& k_index, const TensorRef& rows, int64_t OC,
                         int64_t C_per_group, int64_t KH, int64_t KW, const TensorRef* bias,
                         const ConvParams& p, const TensorRef& output);

// Same with a dense contiguous weight [OC, C/groups, KH, KW] (conv with folded BN + activation).
void conv2d_dense(const TensorRef& input, const TensorRef& weight, const TensorRef* bias,
                  const ConvParams& p, const TensorRef& output);

}  // namespace pyfastcnn
