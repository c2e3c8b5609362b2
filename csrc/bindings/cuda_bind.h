// One bind function per op family of the CUDA module, each in csrc/bindings/cuda_<family>.cpp
// (host compiler; includes only the family's host header from csrc/cuda/).
#pragma once
#include <pybind11/pybind11.h>

namespace pyfastcnn {
namespace cuda {

void bind_int8_ops(pybind11::module_& m);    // cuda_int8.cpp: int8 GEMM, quantized linear/conv
void bind_conv_ops(pybind11::module_& m);    // cuda_conv.cpp: fused conv+bias(+BN)+ReLU
void bind_sparse_ops(pybind11::module_& m);  // cuda_sparse.cpp: sparse conv, 2:4 sparse conv

}  // namespace cuda
}  // namespace pyfastcnn
