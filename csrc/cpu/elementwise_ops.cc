// Native entry points of the INT8 elementwise ops: argument checks, the float32 constants of
// kernels.h (QuantAddArgs, QuantizeArgs), dispatch. Non-ISA code.
#include <algorithm>
#include <cmath>
#include <string>

#include "pyfastcnn/dispatch.h"
#include "pyfastcnn/ops.h"
#include "op_checks.h"

namespace pyfastcnn {
namespace {

// Sizes of dims > 1 and their strides, sorted by stride: dense when each stride is the product
// of the sizes below it (any permutation of a contiguous layout, no gaps, no overlap).
bool is_dense(const TensorRef& t) {
  int order[kMaxDims];
  int m = 0;
  for (int d = 0; d < t.ndim; ++d) {
    if (t.sizes[d] == 0) return true;
    if (t.sizes[d] != 1) order[m++] = d;
  }
  std::sort(order, order + m, [&](int x, int y) { return t.strides[x] < t.strides[y]; });
  int64_t expected = 1;
  for (int i = 0; i < m; ++i) {
    if (t.strides[order[i]] != expected) return false;
    expected *= t.sizes[order[i]];
  }
  return true;
}

bool same_geometry(const TensorRef& x, const TensorRef& y) {
  if (x.ndim != y.ndim) return false;
  for (int d = 0; d < x.ndim; ++d) {
    if (x.sizes[d] != y.sizes[d]) return false;
    if (x.sizes[d] != 1 && x.strides[d] != y.strides[d]) return false;
  }
  return true;
}

void check_qparams(double scale, int32_t zero_point, bool is_signed, const char* what) {
  if (!(scale > 0) || !std::isfinite(scale) || !std::isfinite(static_cast<float>(scale)) ||
      static_cast<float>(scale) <= 0) {
    fail(std::string(what) + "_scale must be a finite positive float32, got " +
         std::to_string(scale));
  }
  const int32_t qmin = is_signed ? -128 : 0, qmax = is_signed ? 127 : 255;
  if (zero_point < qmin || zero_point > qmax) {
    fail(std::string(what) + "_zero_point must be in [" + std::to_string(qmin) + ", " +
         std::to_string(qmax) + "], got " + std::to_string(zero_point));
  }
}

}  // namespace

namespace detail {

void check_codes(const TensorRef& t, const char* name, DType dtype) {
  check_tensor(t, name, dtype, t.ndim);
  if (t.dtype != DType::u8 && t.dtype != DType::i8) {
    fail(std::string(name) + " must be uint8 or int8, got " + dtype_name(t.dtype));
  }
}

bool is_channels_last_4d(const TensorRef& t) {
  if (t.ndim != 4) return false;
  const int64_t C = t.sizes[1], H = t.sizes[2], W = t.sizes[3];
  const int64_t expect[4] = {H * W * C, 1, W * C, C};
  for (int d = 0; d < 4; ++d) {
    if (t.sizes[d] != 1 && t.strides[d] != expect[d]) return false;
  }
  return true;
}

}  // namespace detail

using detail::check_codes;
using detail::is_channels_last_4d;

void quantized_add(const TensorRef& a, const TensorRef& b, const TensorRef& out, double a_scale,
                   int32_t a_zero_point, double b_scale, int32_t b_zero_point, double out_scale,
                   int32_t out_zero_point, bool relu) {
  check_codes(a, "a", a.dtype);
  check_tensor(b, "b", a.dtype, a.ndim);
  check_tensor(out, "out", a.dtype, a.ndim);
  for (int d = 0; d < a.ndim; ++d) {
    if (b.sizes[d] != a.sizes[d]) fail("a and b must have the same shape");
    if (out.sizes[d] != a.sizes[d]) fail("out must have a's shape");
  }
  if (a.numel() == 0) return;
  if (!same_geometry(a, b)) fail("a and b must have the same shape and strides");
  if (!same_geometry(a, out)) fail("out must have a's shape and strides");
  if (!is_dense(a)) fail("a and b must be dense (a permutation of a contiguous layout)");
  const bool is_signed = a.dtype == DType::i8;
  check_qparams(a_scale, a_zero_point, is_signed, "a");
  check_qparams(b_scale, b_zero_point, is_signed, "b");
  check_qparams(out_scale, out_zero_point, is_signed, "out");
  QuantAddArgs args;
  args.a = static_cast<const uint8_t*>(a.data);
  args.b = static_cast<const uint8_t*>(b.data);
  args.out = static_cast<uint8_t*>(out.data);
  args.n = a.numel();
  args.is_signed = is_signed;
  // The constants of kernels.h: ka, kb rounded to float32 once, c from those in double.
  args.ka = static_cast<float>(a_scale / out_scale);
  args.kb = static_cast<float>(b_scale / out_scale);
  args.c = static_cast<float>(static_cast<double>(out_zero_point) -
                              static_cast<double>(args.ka) * a_zero_point -
                              static_cast<double>(args.kb) * b_zero_point);
  if (!std::isfinite(args.ka) || !std::isfinite(args.kb) || !std::isfinite(args.c) ||
      args.ka == 0 || args.kb == 0) {
    fail("scale ratios a_scale/out_scale and b_scale/out_scale must be finite and non-zero in "
         "float32");
  }
  const int32_t qmin = is_signed ? -128 : 0, qmax = is_signed ? 127 : 255;
  args.lo = static_cast<float>(relu ? std::max(qmin, out_zero_point) : qmin);
  args.hi = static_cast<float>(qmax);
  if (args.n == 0) return;
  quantized_add_kernel()(args);
}

void quantize_per_tensor(const TensorRef& x, const TensorRef& out, double scale,
                         int32_t zero_point) {
  check_tensor(x, "x", DType::f32, x.ndim);
  check_codes(out, "out", out.dtype);
  if (out.ndim != x.ndim) fail("out must have x's shape");
  for (int d = 0; d < x.ndim; ++d) {
    if (out.sizes[d] != x.sizes[d]) fail("out must have x's shape");
  }
  const bool is_signed = out.dtype == DType::i8;
  check_qparams(scale, zero_point, is_signed, "x");
  const int32_t qmin = is_signed ? -128 : 0, qmax = is_signed ? 127 : 255;
  QuantizeArgs args;
  args.x = static_cast<const float*>(x.data);
  args.out = static_cast<uint8_t*>(out.data);
  args.is_signed = is_signed;
  args.scale = static_cast<float>(scale);
  args.lo = static_cast<float>(qmin - zero_point);
  args.hi = static_cast<float>(qmax - zero_point);
  args.zero_point = zero_point;
  if (x.numel() == 0) return;
  if (same_geometry(x, out) && is_dense(x)) {
    args.transpose = false;
    args.outer = x.numel();
    args.channels = args.pixels = 1;
  } else if (x.ndim == 4 && x.is_contiguous() && is_channels_last_4d(out)) {
    args.transpose = true;
    args.outer = x.sizes[0];
    args.channels = x.sizes[1];
    args.pixels = x.sizes[2] * x.sizes[3];
  } else {
    fail("x and out must be dense with the same strides, or x NCHW-contiguous and out "
         "channels_last");
  }
  quantize_kernel()(args);
}

}  // namespace pyfastcnn
