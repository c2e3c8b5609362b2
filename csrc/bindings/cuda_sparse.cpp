#include "cuda_bind.h"
#include "sparse_ops.h"

namespace py = pybind11;

namespace pyfastcnn {
namespace cuda {

void bind_sparse_ops(pybind11::module_& m) {
  m.def("sparse_conv2d_csr", &sparse_conv2d_csr,
        "Direct sparse conv, NCHW, CSR weight (row_ptr int32 [OC+1], taps int32 [nnz] = "
        "ci << 16 | kh << 8 | kw, values float32 [nnz], chunk_ptr int32 [OC][chunks+1] or 0, "
        "entries 2 x int32 [nnz] of the tile plan); dtype 0 f32, 1 f16, 2 bf16; tile plan "
        "(images_per_tile, rows_per_tile, chunk_channels); see csrc/cuda/sparse_ops.h",
        py::arg("device"), py::arg("input"), py::arg("dtype"), py::arg("row_ptr"),
        py::arg("taps"), py::arg("values"), py::arg("bias"), py::arg("output"), py::arg("n"),
        py::arg("c"), py::arg("h"), py::arg("w"), py::arg("oc"), py::arg("kh"), py::arg("kw"),
        py::arg("oh"), py::arg("ow"), py::arg("stride_h"), py::arg("stride_w"),
        py::arg("pad_h"), py::arg("pad_w"), py::arg("dil_h"), py::arg("dil_w"),
        py::arg("groups"), py::arg("nnz"), py::arg("relu"), py::arg("chunk_ptr"),
        py::arg("entries"), py::arg("images_per_tile"), py::arg("rows_per_tile"), py::arg("chunk_channels"),
        py::arg("stream"));
  m.def("sparse_conv2d_block", &sparse_conv2d_block,
        "Block-sparse direct conv, NCHW, 32-channel panels (chunk_ptr int32 "
        "[panels][chunks+1], offsets int32 [kept] in the staged patch, ordered by ci per "
        "panel, values float32 [kept][32]); tiled kernel only; see csrc/cuda/sparse_ops.h",
        py::arg("device"), py::arg("input"), py::arg("dtype"), py::arg("chunk_ptr"),
        py::arg("offsets"), py::arg("values"), py::arg("bias"), py::arg("output"), py::arg("n"),
        py::arg("c"), py::arg("h"), py::arg("w"), py::arg("oc"), py::arg("kh"), py::arg("kw"),
        py::arg("oh"), py::arg("ow"), py::arg("stride_h"), py::arg("stride_w"),
        py::arg("pad_h"), py::arg("pad_w"), py::arg("dil_h"), py::arg("dil_w"),
        py::arg("groups"), py::arg("kept"), py::arg("relu"), py::arg("images_per_tile"),
        py::arg("rows_per_tile"), py::arg("chunk_channels"), py::arg("stream"));
  m.def("sparse24_conv2d", &sparse24_conv2d,
        "2:4 sparse conv on sparse tensor cores, NHWC f16/bf16 (dtype 1/2); weight as mma.sp "
        "fragments + metadata (see pyfastcnn.ops.sparse_conv.sparse24_fragments)",
        py::arg("device"), py::arg("input"), py::arg("dtype"), py::arg("frags"), py::arg("meta"),
        py::arg("bias"), py::arg("output"), py::arg("n"), py::arg("c"), py::arg("h"),
        py::arg("w"), py::arg("oc"), py::arg("kh"), py::arg("kw"), py::arg("oh"), py::arg("ow"),
        py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"),
        py::arg("dil_h"), py::arg("dil_w"), py::arg("groups"), py::arg("m_padded"),
        py::arg("k_padded"), py::arg("relu"), py::arg("stream"));
}

}  // namespace cuda
}  // namespace pyfastcnn
