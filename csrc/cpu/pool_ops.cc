// Native entry points of the INT8 pooling ops: argument checks, window tables and divisors of
// kernels.h (QuantMaxPoolArgs, QuantAdaptiveAvgPoolArgs), dispatch. Non-ISA code.
#include <string>
#include <vector>

#include "pyfastcnn/dispatch.h"
#include "pyfastcnn/ops.h"
#include "op_checks.h"

namespace pyfastcnn {
namespace {

using std::to_string;

// Largest window whose int32 code sum (shifted by 128 per pixel for int8) cannot overflow:
// 255 * count < 2^31.
constexpr int64_t kMaxWindow = 8421504;
// Geometry arguments stay far from int64 overflow in the size formulas.
constexpr int64_t kMaxGeometry = int64_t{1} << 31;

// Input codes: uint8/int8, 4-D, dense NHWC, non-empty C, H, W (N may be 0). Returns is_signed.
bool check_pool_input(const TensorRef& q, const TensorRef& out) {
  detail::check_codes(q, "q", q.dtype);
  check_tensor(q, "q", q.dtype, 4);
  check_tensor(out, "out", q.dtype, 4);
  if (q.sizes[1] < 1 || q.sizes[2] < 1 || q.sizes[3] < 1) {
    fail("q must have non-empty channel and spatial dims, got [" + to_string(q.sizes[0]) + ", " +
         to_string(q.sizes[1]) + ", " + to_string(q.sizes[2]) + ", " + to_string(q.sizes[3]) +
         "]");
  }
  if (!detail::is_channels_last_4d(q)) fail("q must be channels_last (dense NHWC)");
  return q.dtype == DType::i8;
}

void check_out(const TensorRef& q, const TensorRef& out, int64_t OH, int64_t OW) {
  if (out.sizes[0] != q.sizes[0] || out.sizes[1] != q.sizes[1] || out.sizes[2] != OH ||
      out.sizes[3] != OW) {
    fail("out must have shape [" + to_string(q.sizes[0]) + ", " + to_string(q.sizes[1]) + ", " +
         to_string(OH) + ", " + to_string(OW) + "]");
  }
  if (!detail::is_channels_last_4d(out)) fail("out must be channels_last (dense NHWC)");
}

// The fields the pooling Args share, from checked q [N, C, H, W] and out [N, C, OH, OW].
template <class Args>
Args pool_args(const TensorRef& q, const TensorRef& out, bool is_signed) {
  Args args{};
  args.in = static_cast<const uint8_t*>(q.data);
  args.out = static_cast<uint8_t*>(out.data);
  args.N = q.sizes[0];
  args.C = q.sizes[1];
  args.H = q.sizes[2];
  args.W = q.sizes[3];
  args.OH = out.sizes[2];
  args.OW = out.sizes[3];
  args.is_signed = is_signed;
  return args;
}

// F.max_pool2d's output size (PyTorch's pooling_output_shape): with ceil_mode the last window
// must start inside the input or the left padding.
int64_t pool_output_size(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dil,
                         bool ceil_mode) {
  const int64_t span = in + 2 * pad - dil * (k - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  if (span < 0) return 0;
  int64_t size = span / stride + 1;
  if (ceil_mode && (size - 1) * stride >= in + pad) --size;
  return size;
}

// floor(n / count) = (n * mul) >> shift for 0 <= n <= 255 * count: with mul = ceil(2^shift /
// count) = (2^shift + e) / count, 0 <= e < count, the product overshoots n / count by
// n * e / (count * 2^shift) < 1 / count when n * e < 2^shift, which 2^shift > 255 * count *
// (count - 1) guarantees; it then never reaches the next integer.
PoolDivisor pool_divisor(int64_t count) {
  const uint64_t bound = 255ull * static_cast<uint64_t>(count) * static_cast<uint64_t>(count - 1);
  uint32_t shift = 0;
  while ((uint64_t{1} << shift) <= bound) ++shift;
  const uint64_t mul = ((uint64_t{1} << shift) + static_cast<uint64_t>(count) - 1) /
                       static_cast<uint64_t>(count);
  if (mul >> 32) fail("pooling window too large: " + to_string(count) + " pixels");
  return {static_cast<int32_t>(count), static_cast<uint32_t>(mul), shift};
}

// Taps [*begin, *end) of a window starting at `start` (image coordinates, may be negative) with
// `taps` taps `dil` apart that land inside [0, size).
void valid_taps(int64_t start, int64_t taps, int64_t dil, int64_t size, int64_t* begin,
                int64_t* end) {
  const int64_t first = start < 0 ? (-start + dil - 1) / dil : 0;
  int64_t last = start > size - 1 ? 0 : (size - 1 - start) / dil + 1;
  if (last > taps) last = taps;
  *begin = first;
  *end = last > first ? last : first;
}

}  // namespace

void quantized_max_pool2d(const TensorRef& q, const TensorRef& out, int64_t KH, int64_t KW,
                          int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                          int64_t dil_h, int64_t dil_w, bool ceil_mode) {
  const bool is_signed = check_pool_input(q, out);
  const int64_t geometry[8] = {KH, KW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w};
  for (int64_t v : geometry) {
    if (v >= kMaxGeometry) fail("kernel_size, stride, padding and dilation must be < 2^31");
  }
  if (KH < 1 || KW < 1) fail("kernel_size must be >= 1");
  if (stride_h < 1 || stride_w < 1) fail("stride must be >= 1");
  if (dil_h < 1 || dil_w < 1) fail("dilation must be >= 1");
  if (pad_h < 0 || pad_w < 0) fail("padding must be >= 0");
  if (pad_h > KH / 2 || pad_w > KW / 2) fail("padding must be at most half of kernel_size");
  const int64_t H = q.sizes[2], W = q.sizes[3];
  const int64_t OH = pool_output_size(H, KH, pad_h, stride_h, dil_h, ceil_mode);
  const int64_t OW = pool_output_size(W, KW, pad_w, stride_w, dil_w, ceil_mode);
  if (OH < 1 || OW < 1) {
    fail("max pool output size would be " + to_string(OH) + "x" + to_string(OW) +
         " for input " + to_string(H) + "x" + to_string(W) + ": too small");
  }
  check_out(q, out, OH, OW);
  if (q.sizes[0] == 0) return;
  std::vector<int64_t> kh_begin(OH), kh_end(OH), kw_begin(OW), kw_end(OW);
  for (int64_t i = 0; i < OH; ++i) {
    valid_taps(i * stride_h - pad_h, KH, dil_h, H, &kh_begin[i], &kh_end[i]);
  }
  for (int64_t i = 0; i < OW; ++i) {
    valid_taps(i * stride_w - pad_w, KW, dil_w, W, &kw_begin[i], &kw_end[i]);
  }
  auto args = pool_args<QuantMaxPoolArgs>(q, out, is_signed);
  args.stride_h = stride_h;
  args.stride_w = stride_w;
  args.pad_h = pad_h;
  args.pad_w = pad_w;
  args.dil_h = dil_h;
  args.dil_w = dil_w;
  args.kh_begin = kh_begin.data();
  args.kh_end = kh_end.data();
  args.kw_begin = kw_begin.data();
  args.kw_end = kw_end.data();
  quantized_max_pool2d_kernel()(args);
}

void quantized_adaptive_avg_pool2d(const TensorRef& q, const TensorRef& out) {
  const bool is_signed = check_pool_input(q, out);
  const int64_t H = q.sizes[2], W = q.sizes[3], OH = out.sizes[2], OW = out.sizes[3];
  if (OH < 1 || OW < 1) fail("output_size must be positive");
  check_out(q, out, OH, OW);
  if (H * W > kMaxWindow) {
    fail("q's H * W must be at most " + to_string(kMaxWindow) + " (int32 sums), got " +
         to_string(H * W));
  }
  if (q.sizes[0] == 0) return;
  // PyTorch's adaptive windows: [floor(i * in / out), ceil((i + 1) * in / out)).
  std::vector<int64_t> h_start(OH), h_end(OH), w_start(OW), w_end(OW);
  for (int64_t i = 0; i < OH; ++i) {
    h_start[i] = i * H / OH;
    h_end[i] = ((i + 1) * H + OH - 1) / OH;
  }
  for (int64_t i = 0; i < OW; ++i) {
    w_start[i] = i * W / OW;
    w_end[i] = ((i + 1) * W + OW - 1) / OW;
  }
  std::vector<PoolDivisor> divisor(OH * OW);
  for (int64_t i = 0; i < OH; ++i) {
    for (int64_t j = 0; j < OW; ++j) {
      const int64_t count = (h_end[i] - h_start[i]) * (w_end[j] - w_start[j]);
      // neighbouring windows mostly share a size: reuse its divisor
      const PoolDivisor* prev = j > 0 ? &divisor[i * OW + j - 1] : nullptr;
      divisor[i * OW + j] = prev && prev->count == count ? *prev : pool_divisor(count);
    }
  }
  auto args = pool_args<QuantAdaptiveAvgPoolArgs>(q, out, is_signed);
  args.h_start = h_start.data();
  args.h_end = h_end.data();
  args.w_start = w_start.data();
  args.w_end = w_end.data();
  args.divisor = divisor.data();
  quantized_adaptive_avg_pool2d_kernel()(args);
}

}  // namespace pyfastcnn
