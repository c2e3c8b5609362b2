// pyfastcnn._C: the CPU ops. Tensors arrive as (data_ptr, dtype_code, sizes, strides) tuples
// built by pyfastcnn/_native.py, so this module never links against torch. Every op re-checks
// its arguments in C++ (ops.cc); std::invalid_argument becomes ValueError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "pyfastcnn/dispatch.h"
#include "pyfastcnn/isa.h"
#include "pyfastcnn/ops.h"
#include "pyfastcnn/parallel.h"
#include "pyfastcnn/tensor_ref.h"

namespace py = pybind11;
using namespace pyfastcnn;

namespace {

TensorRef to_ref(const py::tuple& t, const char* name) {
  if (t.size() != 4) fail(std::string(name) + ": expected (data_ptr, dtype, sizes, strides)");
  TensorRef r;
  r.data = reinterpret_cast<void*>(t[0].cast<uintptr_t>());
  const int code = t[1].cast<int>();
  if (code < 0 || code > static_cast<int>(DType::i64)) fail(std::string(name) + ": bad dtype code");
  r.dtype = static_cast<DType>(code);
  const auto sizes = t[2].cast<std::vector<int64_t>>();
  const auto strides = t[3].cast<std::vector<int64_t>>();
  if (sizes.size() != strides.size() || sizes.size() > static_cast<size_t>(kMaxDims)) {
    fail(std::string(name) + ": sizes and strides must have the same length <= 6");
  }
  r.ndim = static_cast<int>(sizes.size());
  for (int d = 0; d < r.ndim; ++d) {
    r.sizes[d] = sizes[d];
    r.strides[d] = strides[d];
  }
  return r;
}

ConvParams conv_params(int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_left,
                       int64_t dil_h, int64_t dil_w, int64_t groups, float clamp_min,
                       float clamp_max) {
  return {stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups, clamp_min, clamp_max};
}

QuantParams quant_params(int32_t x_zero_point, float x_scale, int out_kind, float clamp_min,
                         float clamp_max, float out_scale, int32_t out_zero_point) {
  if (out_kind < 0 || out_kind > static_cast<int>(Int8OutKind::u8)) fail("bad out_kind");
  return {x_zero_point, x_scale, static_cast<Int8OutKind>(out_kind), clamp_min, clamp_max,
          out_scale, out_zero_point};
}

// A quantized conv's parameters, with its optional residual add (its tensor view in *storage).
QuantParams conv_quant_params(int32_t x_zero_point, float x_scale, int out_kind, float clamp_min,
                              float clamp_max, float out_scale, int32_t out_zero_point,
                              const py::object& residual, float residual_scale,
                              int32_t residual_zero_point, TensorRef* storage) {
  QuantParams q = quant_params(x_zero_point, x_scale, out_kind, clamp_min, clamp_max, out_scale,
                               out_zero_point);
  if (!residual.is_none()) {
    *storage = to_ref(residual.cast<py::tuple>(), "residual");
    q.residual = storage;
    q.residual_scale = residual_scale;
    q.residual_zero_point = residual_zero_point;
  }
  return q;
}

Isa isa_from_name(const std::string& name) {
  Isa isa;
  if (!parse_isa(name.c_str(), &isa)) {
    fail("unknown ISA '" + name +
         "' (choose from scalar, avx2, avx512, avx512_vnni, avx512_bf16, avx512_amx)");
  }
  return isa;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyfastcnn native CPU kernels (torch-free; use the pyfastcnn Python API)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def(
      "int8_gemm",
      [](const py::tuple& a, const py::tuple& b, const py::tuple& out) {
        const TensorRef ra = to_ref(a, "a"), rb = to_ref(b, "b"), rc = to_ref(out, "out");
        py::gil_scoped_release release;
        int8_gemm(ra, rb, rc);
      },
      "out[M,N] int32 = a[M,K] int8 @ b[K,N] int8 (exact, wraps modulo 2^32)", py::arg("a"),
      py::arg("b"), py::arg("out"));

  m.def(
      "int8_packed_bytes",
      [](const std::string& layout, int64_t K, int64_t N) {
        return int8_packed_bytes(isa_from_name(layout), K, N);
      },
      "bytes of B [K, N] packed for the INT8 kernel of ISA `layout`");
  m.def(
      "int8_pack",
      [](const std::string& layout, const py::tuple& b, const py::tuple& packed,
         const py::tuple& col_sums) {
        const Isa isa = isa_from_name(layout);
        const TensorRef rb = to_ref(b, "weight"), rp = to_ref(packed, "packed"),
                        rs = to_ref(col_sums, "col_sums");
        py::gil_scoped_release release;
        int8_pack(isa, rb, rp, rs);
      },
      "pack B [K, N] int8 into `packed` (uint8) and its column sums into `col_sums` (int32)");
  m.def(
      "int8_linear",
      [](const py::tuple& x, const std::string& layout, const py::tuple& packed,
         const py::tuple& col_sums, int64_t K, int64_t N, const py::object& w_scale,
         const py::object& bias, int32_t x_zero_point, float x_scale, int out_kind,
         float clamp_min, float clamp_max, float out_scale, int32_t out_zero_point,
         const py::tuple& out) {
        const Isa isa = isa_from_name(layout);
        const TensorRef rx = to_ref(x, "x"), rp = to_ref(packed, "packed"),
                        rs = to_ref(col_sums, "col_sums"), ro = to_ref(out, "out");
        TensorRef rw, rb;
        if (!w_scale.is_none()) rw = to_ref(w_scale.cast<py::tuple>(), "w_scale");
        if (!bias.is_none()) rb = to_ref(bias.cast<py::tuple>(), "bias");
        const QuantParams q = quant_params(x_zero_point, x_scale, out_kind, clamp_min, clamp_max,
                                           out_scale, out_zero_point);
        py::gil_scoped_release release;
        int8_linear(rx, isa, rp, rs, K, N, w_scale.is_none() ? nullptr : &rw,
                    bias.is_none() ? nullptr : &rb, q, ro);
      },
      "out[M, N] = requantize(x[M, K] @ B): see ops.h for the exact math");
  m.def(
      "int8_conv2d",
      [](const py::tuple& x, const std::string& layout, const py::tuple& packed,
         const py::tuple& col_sums, int64_t c_per_group, int64_t kh, int64_t kw,
         const py::tuple& w_scale, const py::object& bias, int64_t stride_h, int64_t stride_w,
         int64_t pad_top, int64_t pad_left, int64_t dil_h, int64_t dil_w, int64_t groups,
         int32_t x_zero_point, float x_scale, int out_kind, float clamp_min, float clamp_max,
         float out_scale, int32_t out_zero_point, const py::tuple& out,
         const py::object& residual, float residual_scale, int32_t residual_zero_point) {
        const bool depthwise = layout == "depthwise";
        const Isa isa = depthwise ? Isa::scalar : isa_from_name(layout);
        const TensorRef rx = to_ref(x, "input"), rp = to_ref(packed, "packed"),
                        rs = to_ref(col_sums, "col_sums"), rw = to_ref(w_scale, "w_scale"),
                        ro = to_ref(out, "out");
        TensorRef rb, rr;
        if (!bias.is_none()) rb = to_ref(bias.cast<py::tuple>(), "bias");
        const ConvParams p = conv_params(stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                                         groups, clamp_min, clamp_max);
        const QuantParams q =
            conv_quant_params(x_zero_point, x_scale, out_kind, clamp_min, clamp_max, out_scale,
                              out_zero_point, residual, residual_scale, residual_zero_point, &rr);
        py::gil_scoped_release release;
        if (depthwise) {
          if (c_per_group != 1) throw std::invalid_argument("a depthwise weight has C/groups = 1");
          int8_depthwise_conv2d(rx, rp, rs, kh, kw, rw, bias.is_none() ? nullptr : &rb, p, q, ro);
        } else {
          int8_conv2d(rx, isa, rp, rs, c_per_group, kh, kw, rw, bias.is_none() ? nullptr : &rb, p,
                      q, ro);
        }
      },
      "quantized conv, NHWC in and out (optionally + a residual): see ops.h for the exact math; "
      "layout \"depthwise\": packed is int8_depthwise_conv2d's weight");

  m.def(
      "sparse_int8_conv2d",
      [](const py::tuple& x, const py::tuple& row_ptr, const py::tuple& block_k,
         const py::tuple& values, const py::tuple& col_sums, int64_t c_per_group, int64_t kh,
         int64_t kw, const py::tuple& w_scale, const py::object& bias, int64_t stride_h,
         int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t dil_h, int64_t dil_w,
         int64_t groups, int32_t x_zero_point, float x_scale, int out_kind, float clamp_min,
         float clamp_max, float out_scale, int32_t out_zero_point, const py::tuple& out,
         const py::object& residual, float residual_scale, int32_t residual_zero_point) {
        const TensorRef rx = to_ref(x, "input"), rp = to_ref(row_ptr, "row_ptr"),
                        rk = to_ref(block_k, "block_k"), rv = to_ref(values, "values"),
                        rs = to_ref(col_sums, "col_sums"), rw = to_ref(w_scale, "w_scale"),
                        ro = to_ref(out, "out");
        TensorRef rb, rr;
        if (!bias.is_none()) rb = to_ref(bias.cast<py::tuple>(), "bias");
        const ConvParams p = conv_params(stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                                         groups, clamp_min, clamp_max);
        const QuantParams q =
            conv_quant_params(x_zero_point, x_scale, out_kind, clamp_min, clamp_max, out_scale,
                              out_zero_point, residual, residual_scale, residual_zero_point, &rr);
        py::gil_scoped_release release;
        sparse_int8_conv2d(rx, rp, rk, rv, rs, c_per_group, kh, kw, rw,
                           bias.is_none() ? nullptr : &rb, p, q, ro);
      },
      "quantized conv with a sparse weight in 4-channel blocks, NHWC (optionally + a "
      "residual): see ops.h");

  m.def(
      "sparse_conv2d_csr",
      [](const py::tuple& input, const py::tuple& row_ptr, const py::tuple& col_idx,
         const py::tuple& values, const py::object& bias, int64_t oc, int64_t c_per_group,
         int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w, int64_t pad_top,
         int64_t pad_left, int64_t dil_h, int64_t dil_w, int64_t groups, float clamp_min,
         float clamp_max, const py::tuple& out, std::shared_ptr<SparsePlanSlot> plan) {
        const TensorRef ri = to_ref(input, "input"), rp = to_ref(row_ptr, "row_ptr"),
                        rc = to_ref(col_idx, "col_idx"), rv = to_ref(values, "values"),
                        ro = to_ref(out, "out");
        TensorRef rb;
        const bool has_bias = !bias.is_none();
        if (has_bias) rb = to_ref(bias.cast<py::tuple>(), "bias");
        const ConvParams p = conv_params(stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                                         groups, clamp_min, clamp_max);
        py::gil_scoped_release release;
        sparse_conv2d_csr(ri, rp, rc, rv, has_bias ? &rb : nullptr, oc, c_per_group, kh, kw, p,
                          ro, plan.get());
      },
      "out = clamp(conv2d(input, W_csr) + bias, clamp_min, clamp_max); plan: a SparsePlanSlot "
      "kept for this weight's arrays (or None)",
      py::arg("input"), py::arg("row_ptr"), py::arg("col_idx"), py::arg("values"),
      py::arg("bias"), py::arg("oc"), py::arg("c_per_group"), py::arg("kh"), py::arg("kw"),
      py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_top"), py::arg("pad_left"),
      py::arg("dil_h"), py::arg("dil_w"), py::arg("groups"), py::arg("clamp_min"),
      py::arg("clamp_max"), py::arg("out"), py::arg("plan") = nullptr);
  py::class_<SparsePlanSlot, std::shared_ptr<SparsePlanSlot>>(
      m, "SparsePlanSlot",
      "The prepared indices of one CSR weight for sparse_conv2d_csr (opaque; see ops.h)")
      .def(py::init<>());

  m.def(
      "sparse_conv2d_block",
      [](const py::tuple& input, const py::tuple& row_ptr, const py::tuple& col_idx,
         const py::tuple& values, const py::object& bias, int64_t oc, int64_t c_per_group,
         int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w, int64_t pad_top,
         int64_t pad_left, int64_t dil_h, int64_t dil_w, int64_t groups, float clamp_min,
         float clamp_max, const py::tuple& out) {
        const TensorRef ri = to_ref(input, "input"), rp = to_ref(row_ptr, "row_ptr"),
                        rc = to_ref(col_idx, "col_idx"), rv = to_ref(values, "values"),
                        ro = to_ref(out, "out");
        TensorRef rb;
        if (!bias.is_none()) rb = to_ref(bias.cast<py::tuple>(), "bias");
        const ConvParams p = conv_params(stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                                         groups, clamp_min, clamp_max);
        py::gil_scoped_release release;
        sparse_conv2d_block(ri, rp, rc, rv, oc, c_per_group, kh, kw,
                            bias.is_none() ? nullptr : &rb, p, ro);
      },
      "out = clamp(conv2d(input, W_block) + bias): block-sparse weight, see ops.h");

  m.def(
      "conv2d_dense",
      [](const py::tuple& input, const py::tuple& weight, const py::object& bias,
         int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t dil_h,
         int64_t dil_w, int64_t groups, float clamp_min, float clamp_max, const py::tuple& out) {
        const TensorRef ri = to_ref(input, "input"), rw = to_ref(weight, "weight"),
                        ro = to_ref(out, "out");
        TensorRef rb;
        const bool has_bias = !bias.is_none();
        if (has_bias) rb = to_ref(bias.cast<py::tuple>(), "bias");
        const ConvParams p = conv_params(stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                                         groups, clamp_min, clamp_max);
        py::gil_scoped_release release;
        conv2d_dense(ri, rw, has_bias ? &rb : nullptr, p, ro);
      },
      "out = clamp(conv2d(input, weight) + bias, clamp_min, clamp_max), dense weight");

  m.def(
      "conv2d_f32_packed_floats",
      [](const std::string& layout, int64_t oc, int64_t c_per_group, int64_t kh, int64_t kw,
         int64_t groups) {
        return conv2d_f32_packed_floats(isa_from_name(layout), oc, c_per_group, kh, kw, groups);
      },
      "floats of FP32 conv weights packed for the kernel of ISA `layout`");
  m.def(
      "conv2d_f32_pack",
      [](const std::string& layout, const py::tuple& weight, int64_t groups,
         const py::tuple& packed) {
        const Isa isa = isa_from_name(layout);
        const TensorRef rw = to_ref(weight, "weight"), rp = to_ref(packed, "packed");
        py::gil_scoped_release release;
        conv2d_f32_pack(isa, rw, groups, rp);
      },
      "pack FP32 conv weights [OC, C/groups, KH, KW] into `packed`");
  m.def(
      "conv2d_f32_packed",
      [](const py::tuple& input, const std::string& layout, const py::tuple& packed, int64_t oc,
         int64_t c_per_group, int64_t kh, int64_t kw, const py::object& bias, int64_t stride_h,
         int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t dil_h, int64_t dil_w,
         int64_t groups, float clamp_min, float clamp_max, const py::tuple& out) {
        const Isa isa = isa_from_name(layout);
        const TensorRef ri = to_ref(input, "input"), rp = to_ref(packed, "packed"),
                        ro = to_ref(out, "out");
        TensorRef rb;
        if (!bias.is_none()) rb = to_ref(bias.cast<py::tuple>(), "bias");
        const ConvParams p = conv_params(stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                                         groups, clamp_min, clamp_max);
        py::gil_scoped_release release;
        conv2d_f32_packed(ri, isa, rp, oc, c_per_group, kh, kw, bias.is_none() ? nullptr : &rb,
                          p, ro);
      },
      "out = clamp(conv2d(input, W) + bias), W packed by conv2d_f32_pack");

  m.def(
      "conv2d_bf16_packed_elems",
      [](const std::string& layout, int64_t oc, int64_t c_per_group, int64_t kh, int64_t kw,
         int64_t groups) {
        return conv2d_bf16_packed_elems(isa_from_name(layout), oc, c_per_group, kh, kw, groups);
      },
      "bfloat16 elements of conv weights packed for the BF16 kernel of ISA `layout`");
  m.def(
      "conv2d_bf16_pack",
      [](const std::string& layout, const py::tuple& weight, int64_t groups,
         const py::tuple& packed) {
        const Isa isa = isa_from_name(layout);
        const TensorRef rw = to_ref(weight, "weight"), rp = to_ref(packed, "packed");
        py::gil_scoped_release release;
        conv2d_bf16_pack(isa, rw, groups, rp);
      },
      "pack FP32 conv weights [OC, C/groups, KH, KW] as bfloat16 into `packed`");
  m.def(
      "conv2d_bf16_packed",
      [](const py::tuple& input, const std::string& layout, const py::tuple& packed, int64_t oc,
         int64_t c_per_group, int64_t kh, int64_t kw, const py::object& bias, int64_t stride_h,
         int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t dil_h, int64_t dil_w,
         int64_t groups, float clamp_min, float clamp_max, const py::tuple& out) {
        const Isa isa = isa_from_name(layout);
        const TensorRef ri = to_ref(input, "input"), rp = to_ref(packed, "packed"),
                        ro = to_ref(out, "out");
        TensorRef rb;
        if (!bias.is_none()) rb = to_ref(bias.cast<py::tuple>(), "bias");
        const ConvParams p = conv_params(stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                                         groups, clamp_min, clamp_max);
        py::gil_scoped_release release;
        conv2d_bf16_packed(ri, isa, rp, oc, c_per_group, kh, kw, bias.is_none() ? nullptr : &rb,
                           p, ro);
      },
      "out = clamp(conv2d(bf16(input), W) + bias), W packed by conv2d_bf16_pack, FP32 out");

  m.def(
      "quantized_add",
      [](const py::tuple& a, double a_scale, int32_t a_zero_point, const py::tuple& b,
         double b_scale, int32_t b_zero_point, double out_scale, int32_t out_zero_point,
         bool relu, const py::tuple& out) {
        const TensorRef ra = to_ref(a, "a"), rb = to_ref(b, "b"), ro = to_ref(out, "out");
        py::gil_scoped_release release;
        quantized_add(ra, rb, ro, a_scale, a_zero_point, b_scale, b_zero_point, out_scale,
                      out_zero_point, relu);
      },
      "out = quantized a + b (uint8/int8, same shape and dense strides): see kernels.h");
  m.def(
      "quantize_per_tensor",
      [](const py::tuple& x, double scale, int32_t zero_point, const py::tuple& out) {
        const TensorRef rx = to_ref(x, "x"), ro = to_ref(out, "out");
        py::gil_scoped_release release;
        quantize_per_tensor(rx, ro, scale, zero_point);
      },
      "out = clamp(round_half_even(x / scale) + zero_point) (NaN -> zero_point); NCHW x -> "
      "channels_last out fused");
  m.def(
      "quantized_max_pool2d",
      [](const py::tuple& q, int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w,
         int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, bool ceil_mode,
         const py::tuple& out) {
        const TensorRef rq = to_ref(q, "q"), ro = to_ref(out, "out");
        py::gil_scoped_release release;
        quantized_max_pool2d(rq, ro, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                             ceil_mode);
      },
      "out = F.max_pool2d of channels_last uint8/int8 codes (empty windows: lowest code)");
  m.def(
      "quantized_adaptive_avg_pool2d",
      [](const py::tuple& q, const py::tuple& out) {
        const TensorRef rq = to_ref(q, "q"), ro = to_ref(out, "out");
        py::gil_scoped_release release;
        quantized_adaptive_avg_pool2d(rq, ro);
      },
      "out = round_half_even(mean of each adaptive window's codes), channels_last uint8/int8; "
      "output size from out");
  m.def("detected_isa", [] { return std::string(isa_name(detected_isa())); },
        "best ISA level of this CPU");
  m.def("selected_isa", [] { return std::string(isa_name(selected_isa())); },
        "ISA level the kernels use now");
  m.def("set_isa", [](const std::string& name) { set_isa(isa_from_name(name)); },
        "force an ISA level at or below detected_isa()", py::arg("name"));
  m.def("supported_isas", [] {
    std::vector<std::string> names;
    for (int i = 0; i <= static_cast<int>(detected_isa()); ++i) {
      names.emplace_back(isa_name(static_cast<Isa>(i)));
    }
    return names;
  });
  m.def("kernel_isa", [](const std::string& op) { return std::string(kernel_isa(op.c_str())); },
        "ISA level of the kernel an op runs now", py::arg("op"));
  m.def("get_num_threads", &get_num_threads);
  m.def("threading_backend", &threading_backend);
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("build_info", [] {
    py::dict info;
    info["compiler"] = PYFASTCNN_COMPILER;
    info["build_type"] = PYFASTCNN_BUILD_TYPE;
    info["flags"] = PYFASTCNN_FLAGS;
    py::dict isa_flags;
    isa_flags["scalar"] = "";
    isa_flags["avx2"] = PYFASTCNN_FLAGS_AVX2;
    isa_flags["avx512"] = PYFASTCNN_FLAGS_AVX512;
    isa_flags["avx512_vnni"] = PYFASTCNN_FLAGS_AVX512_VNNI;
    isa_flags["avx512_bf16"] = PYFASTCNN_FLAGS_AVX512_BF16;
    isa_flags["avx512_amx"] = PYFASTCNN_FLAGS_AVX512_AMX;
    info["isa_flags"] = isa_flags;
    return info;
  });
}
