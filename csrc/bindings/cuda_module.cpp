// pyfastcnn._cuda: the CUDA ops. Device pointers and the stream arrive as integers from
// pyfastcnn's Python layer (which checks devices, dtypes and shapes first); every entry point
// also takes the device index (see DeviceScope in csrc/cuda/check.cuh).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cuda_bind.h"
#include "pyfastcnn/cuda_ops.h"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "pyfastcnn native CUDA kernels (use the pyfastcnn Python API)";
  m.def("devices", &pyfastcnn::cuda::device_names, "names of the visible CUDA devices");
  m.def("runtime_version", &pyfastcnn::cuda::runtime_version);
  m.def("scale_f32", &pyfastcnn::cuda::scale_f32, "data[:n] *= alpha on `stream`",
        py::arg("data"), py::arg("n"), py::arg("alpha"), py::arg("stream"));
  m.def("build_info", [] {
    py::dict info;
    info["archs"] = PYFASTCNN_CUDA_ARCHS;
    info["nvcc"] = PYFASTCNN_NVCC;
    return info;
  });
  pyfastcnn::cuda::bind_int8_ops(m);
  pyfastcnn::cuda::bind_conv_ops(m);
  pyfastcnn::cuda::bind_sparse_ops(m);
}
