#include <pybind11/stl.h>

#include "conv_ops.h"
#include "cuda_bind.h"

namespace py = pybind11;

namespace pyfastcnn {
namespace cuda {

void bind_conv_ops(py::module_& m) {
  m.def("conv2d_bias_act", &conv2d_bias_act,
        "out = clamp(conv2d(x, weight) + bias, clamp_min, clamp_max) on `stream` of `device`.\n"
        "x: NHWC [n, h, w, c]; weight: [oc, kh, kw, c/groups]; bias: float32 [oc] or 0; out:\n"
        "NHWC [n, oh, ow, oc]; one dtype for x, weight and out (0 float32, 2 float16, 3\n"
        "bfloat16). Returns the kernel that ran. Use pyfastcnn.conv_bn_relu.",
        py::arg("device"), py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
        py::arg("dtype"), py::arg("n"), py::arg("h"), py::arg("w"), py::arg("c"), py::arg("oc"),
        py::arg("kh"), py::arg("kw"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"),
        py::arg("pad_w"), py::arg("dilation_h"), py::arg("dilation_w"), py::arg("groups"),
        py::arg("oh"), py::arg("ow"), py::arg("clamp_min"), py::arg("clamp_max"),
        py::arg("stream"), py::arg("algo") = "auto");
}

}  // namespace cuda
}  // namespace pyfastcnn
