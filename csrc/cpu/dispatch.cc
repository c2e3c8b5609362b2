// Function tables, one entry per ISA level (scalar, avx2, avx512, avx512_vnni, avx512_bf16,
// avx512_amx;
// missing trailing entries are null: the level below is used). Built without ISA
// flags: it only takes the addresses of kernels and never calls one the CPU cannot run.
#include "pyfastcnn/dispatch.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace pyfastcnn {
namespace {

#define INT8_GEMM_ENTRY(isa, ns, fused, conv, signed_a, repack) \
  { isa, ns::int8_packed_b_bytes, ns::int8_pack_b, ns::int8_gemm, fused, conv, signed_a, repack }

const Int8GemmKernel kInt8Gemm[kNumIsas] = {
    INT8_GEMM_ENTRY(Isa::scalar, ref, true, nullptr, false, nullptr),
#ifdef PYFASTCNN_X86
    INT8_GEMM_ENTRY(Isa::avx2, avx2, true, avx2::int8_conv, true,
                    avx2::int8_repack_conv_rows),
    // AVX-512 without VNNI runs the AVX2 kernels (fused epilogue, implicit conv); the
    // unfused AVX-512BW GEMM it had was removed (no fused zmm version yet).
    {Isa::avx512, nullptr, nullptr, nullptr, false, nullptr, false, nullptr},
    INT8_GEMM_ENTRY(Isa::avx512_vnni, avx512_vnni, true, avx512_vnni::int8_conv, true,
                    avx512_vnni::int8_repack_conv_rows),
    {Isa::avx512_bf16, nullptr, nullptr, nullptr, false, nullptr, false, nullptr},
    INT8_GEMM_ENTRY(Isa::avx512_amx, avx512_amx, true, avx512_amx::int8_conv, true,
                    avx512_amx::int8_repack_conv_rows),
#endif
};

#define F32_CONV_ENTRY(isa, ns) \
  { isa, ns::f32_packed_floats, ns::f32_pack_b, ns::conv2d_f32 }
const F32ConvKernel kF32Conv[kNumIsas] = {
    {Isa::scalar, nullptr, nullptr, nullptr},
#ifdef PYFASTCNN_X86
    F32_CONV_ENTRY(Isa::avx2, avx2),
    F32_CONV_ENTRY(Isa::avx512, avx512),
#endif
};

const Bf16ConvKernel kBf16Conv[kNumIsas] = {
    {Isa::scalar, nullptr, nullptr, nullptr, nullptr},
#ifdef PYFASTCNN_X86
    {Isa::avx2, nullptr, nullptr, nullptr, nullptr},
    {Isa::avx512, nullptr, nullptr, nullptr, nullptr},
    {Isa::avx512_vnni, nullptr, nullptr, nullptr, nullptr},
    {Isa::avx512_bf16, avx512_bf16::bf16_packed_elems, avx512_bf16::bf16_pack_b,
     avx512_bf16::conv2d_bf16, avx512_bf16::to_bf16_n},
    {Isa::avx512_amx, avx512_bf16::bf16_packed_elems, avx512_bf16::bf16_pack_b,
     avx512_amx::conv2d_bf16, avx512_bf16::to_bf16_n},
#endif
};

const F32BlockSparseFn kF32BlockSparse[kNumIsas] = {
    nullptr,
#ifdef PYFASTCNN_X86
    avx2::conv2d_f32_block_sparse,
    avx512::conv2d_f32_block_sparse,
#endif
};

const F32DepthwiseFn kF32Depthwise[kNumIsas] = {
    nullptr,
#ifdef PYFASTCNN_X86
    avx2::depthwise_f32,
    avx512::depthwise_f32,
#endif
};

const SparseConv2dCsrFn kSparseConv2dCsr[kNumIsas] = {ref::sparse_conv2d_csr};
const SparsePlanesFn kSparsePlanes[kNumIsas] = {
    nullptr,
#ifdef PYFASTCNN_X86
    avx2::sparse_conv_planes,
    avx512::sparse_conv_planes,
#endif
};
const Conv2dDenseFn kConv2dDense[kNumIsas] = {ref::conv2d_dense};
// No AVX-512 (non-VNNI) entry: that level runs the AVX2 kernel.
const SparseInt8ConvFn kSparseInt8Conv[kNumIsas] = {
    nullptr,
#ifdef PYFASTCNN_X86
    avx2::sparse_int8_conv,
    nullptr,
    avx512_vnni::sparse_int8_conv,
#endif
};

// The group layout: AVX2 (also for AVX-512 without VNNI) and VNNI kernels.
const SparseInt8ConvFn kSparseInt8GroupConv[kNumIsas] = {
    nullptr,
#ifdef PYFASTCNN_X86
    avx2::sparse_int8_group_conv,
    nullptr,
    avx512_vnni::sparse_int8_group_conv,
#endif
};

// No AVX-512 (non-VNNI) entry: that level runs the AVX2 kernel.
const Int8DepthwiseFn kInt8Depthwise[kNumIsas] = {
    ref::int8_depthwise,
#ifdef PYFASTCNN_X86
    avx2::int8_depthwise,
    nullptr,
    avx512_vnni::int8_depthwise,
#endif
};

const QuantAddFn kQuantAdd[kNumIsas] = {
    ref::quantized_add,
#ifdef PYFASTCNN_X86
    avx2::quantized_add,
    avx512::quantized_add,
#endif
};
const QuantizeFn kQuantize[kNumIsas] = {
    ref::quantize,
#ifdef PYFASTCNN_X86
    avx2::quantize,
    avx512::quantize,
#endif
};
const TransposeF32Fn kTransposeF32[kNumIsas] = {
    ref::transpose_f32,
#ifdef PYFASTCNN_X86
    avx2::transpose_f32,
    avx512::transpose_f32,
#endif
};
const QuantMaxPoolFn kQuantMaxPool[kNumIsas] = {
    ref::quantized_max_pool2d,
#ifdef PYFASTCNN_X86
    avx2::quantized_max_pool2d,
    avx512::quantized_max_pool2d,
#endif
};
const QuantAdaptiveAvgPoolFn kQuantAdaptiveAvgPool[kNumIsas] = {
    ref::quantized_adaptive_avg_pool2d,
#ifdef PYFASTCNN_X86
    avx2::quantized_adaptive_avg_pool2d,
    avx512::quantized_adaptive_avg_pool2d,
#endif
};

// Index of the entry to use at `isa`: the nearest level at or below it that has a kernel.
template <class T, class HasKernel>
int level_for(const T (&table)[kNumIsas], Isa isa, HasKernel has_kernel) {
  for (int level = static_cast<int>(isa); level > 0; --level) {
    if (has_kernel(table[level])) return level;
  }
  return 0;
}

int int8_level(Isa isa) {
  return level_for(kInt8Gemm, isa, [](const Int8GemmKernel& k) { return k.gemm != nullptr; });
}
template <class Fn>
int fn_level(const Fn (&table)[kNumIsas], Isa isa) {
  return level_for(table, isa, [](Fn f) { return f != nullptr; });
}

int f32_conv_level(Isa isa) {
  return level_for(kF32Conv, isa, [](const F32ConvKernel& k) { return k.conv != nullptr; });
}

}  // namespace

F32ConvKernel f32_conv_kernel() { return kF32Conv[f32_conv_level(selected_isa())]; }

namespace {
int bf16_conv_level(Isa isa) {
  return level_for(kBf16Conv, isa, [](const Bf16ConvKernel& k) { return k.conv != nullptr; });
}
}  // namespace

Bf16ConvKernel bf16_conv_kernel() { return kBf16Conv[bf16_conv_level(selected_isa())]; }

Int8GemmKernel int8_gemm_kernel_for(Isa isa) { return kInt8Gemm[int8_level(isa)]; }
Int8GemmKernel int8_gemm_kernel() { return int8_gemm_kernel_for(selected_isa()); }
SparseConv2dCsrFn sparse_conv2d_csr_kernel() {
  return kSparseConv2dCsr[fn_level(kSparseConv2dCsr, selected_isa())];
}
F32BlockSparseFn f32_block_sparse_kernel() {
  return kF32BlockSparse[fn_level(kF32BlockSparse, selected_isa())];
}
F32DepthwiseFn f32_depthwise_kernel() {
  return kF32Depthwise[fn_level(kF32Depthwise, selected_isa())];
}
SparsePlanesFn sparse_planes_kernel() {
  return kSparsePlanes[fn_level(kSparsePlanes, selected_isa())];
}
SparseInt8ConvFn sparse_int8_conv_kernel() {
  return kSparseInt8Conv[fn_level(kSparseInt8Conv, selected_isa())];
}
SparseInt8ConvFn sparse_int8_group_conv_kernel() {
  return kSparseInt8GroupConv[fn_level(kSparseInt8GroupConv, selected_isa())];
}
Int8DepthwiseFn int8_depthwise_kernel() {
  return kInt8Depthwise[fn_level(kInt8Depthwise, selected_isa())];
}
QuantAddFn quantized_add_kernel() { return kQuantAdd[fn_level(kQuantAdd, selected_isa())]; }
QuantizeFn quantize_kernel() { return kQuantize[fn_level(kQuantize, selected_isa())]; }
TransposeF32Fn transpose_f32_kernel() {
  return kTransposeF32[fn_level(kTransposeF32, selected_isa())];
}
QuantMaxPoolFn quantized_max_pool2d_kernel() {
  return kQuantMaxPool[fn_level(kQuantMaxPool, selected_isa())];
}
QuantAdaptiveAvgPoolFn quantized_adaptive_avg_pool2d_kernel() {
  return kQuantAdaptiveAvgPool[fn_level(kQuantAdaptiveAvgPool, selected_isa())];
}
Conv2dDenseFn conv2d_dense_kernel() { return kConv2dDense[fn_level(kConv2dDense, selected_isa())]; }

const char* kernel_isa(const char* op) {
  const Isa isa = selected_isa();
  int level;
  if (std::strcmp(op, "int8_gemm") == 0) {
    level = int8_level(isa);
  } else if (std::strcmp(op, "sparse_conv2d") == 0) {
    level = fn_level(kSparsePlanes, isa);
  } else if (std::strcmp(op, "sparse_conv2d_block") == 0) {
    level = fn_level(kF32BlockSparse, isa);
  } else if (std::strcmp(op, "conv2d_bf16") == 0) {
    level = bf16_conv_level(isa);
  } else if (std::strcmp(op, "sparse_quantized_conv2d") == 0) {
    level = fn_level(kSparseInt8Conv, isa);
  } else if (std::strcmp(op, "sparse_quantized_conv2d_groups") == 0) {
    level = fn_level(kSparseInt8GroupConv, isa);
  } else if (std::strcmp(op, "quantized_depthwise_conv2d") == 0) {
    level = fn_level(kInt8Depthwise, isa);
  } else if (std::strcmp(op, "quantized_add") == 0) {
    level = fn_level(kQuantAdd, isa);
  } else if (std::strcmp(op, "quantize_per_tensor") == 0) {
    level = fn_level(kQuantize, isa);
  } else if (std::strcmp(op, "quantized_max_pool2d") == 0) {
    level = fn_level(kQuantMaxPool, isa);
  } else if (std::strcmp(op, "quantized_adaptive_avg_pool2d") == 0) {
    level = fn_level(kQuantAdaptiveAvgPool, isa);
  } else if (std::strcmp(op, "transpose_f32") == 0) {
    level = fn_level(kTransposeF32, isa);
  } else if (std::strcmp(op, "conv2d_dense") == 0) {
    level = f32_conv_level(isa);
  } else {
    throw std::invalid_argument(std::string("unknown op '") + op + "'");
  }
  return isa_name(static_cast<Isa>(level));
}

}  // namespace pyfastcnn
