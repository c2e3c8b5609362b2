// The INT8 family of pyfastcnn._cuda: GEMM, quantized linear (the same GEMM with an epilogue),
// quantized conv2d (implicit GEMM or direct). Called by pyfastcnn/ops/cuda_int8.py only, which
// has checked devices, dtypes, shapes and layouts; the launchers check again.
#include <pybind11/pybind11.h>

#include "cuda_bind.h"
#include "int8_ops.h"

namespace py = pybind11;

namespace pyfastcnn {
namespace cuda {

void bind_int8_ops(py::module_& m) {
  py::class_<EpilogueArgs>(m, "Int8Epilogue",
                           "Requantization epilogue of the INT8 ops (see csrc/cuda/int8_ops.h)")
      .def(py::init([](int out_kind, uintptr_t col_sums, int32_t x_zero_point, float x_scale,
                       uintptr_t w_scale, uintptr_t bias, float out_scale, int32_t out_zero_point,
                       float clamp_min, float clamp_max, uintptr_t residual, bool residual_signed,
                       float residual_scale, int32_t residual_zero_point) {
             EpilogueArgs e;
             e.out_kind = out_kind;
             e.col_sums = col_sums;
             e.x_zero_point = x_zero_point;
             e.x_scale = x_scale;
             e.w_scale = w_scale;
             e.bias = bias;
             e.out_scale = out_scale;
             e.out_zero_point = out_zero_point;
             e.clamp_min = clamp_min;
             e.clamp_max = clamp_max;
             e.residual = residual;
             e.residual_signed = residual_signed;
             e.residual_scale = residual_scale;
             e.residual_zero_point = residual_zero_point;
             return e;
           }),
           py::arg("out_kind") = 0, py::arg("col_sums") = 0, py::arg("x_zero_point") = 0,
           py::arg("x_scale") = 1.0f, py::arg("w_scale") = 0, py::arg("bias") = 0,
           py::arg("out_scale") = 1.0f, py::arg("out_zero_point") = 0,
           py::arg("clamp_min") = 0.0f, py::arg("clamp_max") = 0.0f, py::arg("residual") = 0,
           py::arg("residual_signed") = false, py::arg("residual_scale") = 1.0f,
           py::arg("residual_zero_point") = 0);

  m.def("int8_gemm", &int8_gemm,
        "out[M, N] = epilogue(a[M, K] (int8 if a_signed, else uint8; row stride lda bytes) x "
        "b[N, K]^T (int8, row stride ldb)) on `stream` of `device`. path: 0 auto, 1 mma.sync, "
        "2 CUDA cores, 3 wgmma (Hopper); the tensor-core paths need K % 16 == 0 and a, lda, b, "
        "ldb 16-byte aligned, else CUDA cores run. out row stride ldc elements.",
        py::arg("device"), py::arg("stream"), py::arg("a"), py::arg("lda"), py::arg("a_signed"),
        py::arg("b"), py::arg("ldb"), py::arg("M"), py::arg("N"), py::arg("K"), py::arg("out"),
        py::arg("ldc"), py::arg("epilogue"), py::arg("path") = 0);
  m.def("int8_wgmma_available", &int8_wgmma_available,
        "whether `device` runs the wgmma INT8 kernel (sm_90 and a build with sm_90a code)",
        py::arg("device"));
  m.def("int8_gemm_strided", &int8_gemm_strided,
        "out[M, N] = epilogue(a[M, K] x b[K, N]) with b int8 at b + k * b_stride_k + n * "
        "b_stride_n (CUDA cores; any shape and alignment)",
        py::arg("device"), py::arg("stream"), py::arg("a"), py::arg("lda"), py::arg("a_signed"),
        py::arg("b"), py::arg("b_stride_k"), py::arg("b_stride_n"), py::arg("M"), py::arg("N"),
        py::arg("K"), py::arg("out"), py::arg("ldc"), py::arg("epilogue"));
  m.def("int8_conv2d_igemm", &int8_conv2d_igemm,
        "INT8 conv2d as an implicit GEMM on tensor cores: x NHWC [batch, Hp, Wp, Cp] padded "
        "with the zero point, each group's channels padded to cgp (multiple of 16); weight int8 "
        "[groups * ocg, KH * KW * cgp]; out NHWC [batch * OH * OW, groups * ocg]; path: 0 auto, "
        "1 mma.sync, 3 wgmma",
        py::arg("device"), py::arg("stream"), py::arg("x"), py::arg("x_signed"), py::arg("batch"),
        py::arg("Hp"), py::arg("Wp"), py::arg("Cp"), py::arg("weight"), py::arg("KH"),
        py::arg("KW"), py::arg("cgp"), py::arg("groups"), py::arg("ocg"), py::arg("stride_h"),
        py::arg("stride_w"), py::arg("dil_h"), py::arg("dil_w"), py::arg("OH"), py::arg("OW"),
        py::arg("out"), py::arg("epilogue"), py::arg("path") = 0);
  m.def("int8_conv2d_direct", &int8_conv2d_direct,
        "INT8 conv2d on CUDA cores, one thread per output (depthwise, few channels per group): "
        "x NHWC [batch, Hp, Wp, groups * cg] padded with the zero point; weight int8 "
        "[groups * ocg, KH * KW * cg]; out NHWC [batch * OH * OW, groups * ocg]",
        py::arg("device"), py::arg("stream"), py::arg("x"), py::arg("x_signed"), py::arg("batch"),
        py::arg("Hp"), py::arg("Wp"), py::arg("weight"), py::arg("KH"), py::arg("KW"),
        py::arg("cg"), py::arg("groups"), py::arg("ocg"), py::arg("stride_h"),
        py::arg("stride_w"), py::arg("dil_h"), py::arg("dil_w"), py::arg("OH"), py::arg("OW"),
        py::arg("out"), py::arg("epilogue"));
}

}  // namespace cuda
}  // namespace pyfastcnn
