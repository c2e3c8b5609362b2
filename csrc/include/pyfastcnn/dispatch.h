// Per-op function tables: one entry per ISA level, null where a level has no kernel of its own;
// the selected level's entry is used, falling back to the nearest lower level.
#pragma once
#include "pyfastcnn/isa.h"
#include "pyfastcnn/kernels.h"

namespace pyfastcnn {

struct Int8GemmKernel {
  Isa isa;  // level that provided it: packed layouts are only valid for the same level
  Int8PackedBytesFn packed_bytes;
  Int8PackBFn pack_b;
  Int8GemmFn gemm;
  bool fused_epilogue;  // false: gemm handles Int8OutKind::i32 only
  Int8ConvFn conv;      // implicit-GEMM conv with fused epilogue, or null (im2col + gemm)
  bool signed_a;        // gemm reads int8 A directly (Int8GemmArgs::a_signed)
  Int8RepackConvRowsFn repack_conv_rows;  // compact kernel rows for conv, or null
};
struct F32ConvKernel {
  Isa isa;
  F32PackedFloatsFn packed_floats;
  F32PackBFn pack_b;
  F32ConvFn conv;  // null: no implicit-GEMM kernel at this level (direct reference conv)
};
F32ConvKernel f32_conv_kernel();

struct Bf16ConvKernel {
  Isa isa;
  Bf16PackedElemsFn packed_elems;
  Bf16PackBFn pack_b;
  Bf16ConvFn conv;  // null below avx512_bf16
  Bf16ConvertFn convert;
};
Bf16ConvKernel bf16_conv_kernel();
F32BlockSparseFn f32_block_sparse_kernel();  // null on the scalar level
F32DepthwiseFn f32_depthwise_kernel();        // null on the scalar level

Int8GemmKernel int8_gemm_kernel();
Int8GemmKernel int8_gemm_kernel_for(Isa isa);
SparseConv2dCsrFn sparse_conv2d_csr_kernel();
// Vectorized sparse kernel over virtual planes at the selected level, or null (reference).
SparsePlanesFn sparse_planes_kernel();
Conv2dDenseFn conv2d_dense_kernel();
// Vectorized sparse INT8 conv at the selected level, or null (scalar reference).
SparseInt8ConvFn sparse_int8_conv_kernel();
// The same for weights in the group layout (AVX-512 VNNI and up), or null (scalar reference).
SparseInt8ConvFn sparse_int8_group_conv_kernel();
// INT8 depthwise conv at the selected level (never null: the scalar reference at worst).
Int8DepthwiseFn int8_depthwise_kernel();
// INT8 elementwise and pooling kernels at the selected level (never null: the scalar
// reference at worst).
QuantAddFn quantized_add_kernel();
QuantizeFn quantize_kernel();
TransposeF32Fn transpose_f32_kernel();
QuantMaxPoolFn quantized_max_pool2d_kernel();
QuantAdaptiveAvgPoolFn quantized_adaptive_avg_pool2d_kernel();

// Name of the ISA whose kernel an op runs under the current selection ("avx512_vnni", ...).
const char* kernel_isa(const char* op);

}  // namespace pyfastcnn
