// Native INT8 entry points: checks, activation shift, epilogue set-up, im2col, dispatch.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "op_checks.h"
#include "pyfastcnn/dispatch.h"
#include "pyfastcnn/memory.h"
#include "pyfastcnn/ops.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace {

using std::to_string;

Int8GemmKernel kernel_for_layout(Isa layout) {
  const Int8GemmKernel k = int8_gemm_kernel_for(layout);
  detail::check_packed_layout(layout, k.gemm != nullptr, k.isa, "INT8");
  return k;
}

int64_t out_elem_size(Int8OutKind kind) {
  return kind == Int8OutKind::i32 || kind == Int8OutKind::f32 ? 4 : 1;
}

DType out_dtype(Int8OutKind kind) {
  switch (kind) {
    case Int8OutKind::i32: return DType::i32;
    case Int8OutKind::f32: return DType::f32;
    case Int8OutKind::s8: return DType::i8;
    case Int8OutKind::u8: return DType::u8;
  }
  return DType::f32;
}

void check_zero_point(int32_t zp, DType dtype, const char* name) {
  const int32_t lo = dtype == DType::i8 ? -128 : 0, hi = dtype == DType::i8 ? 127 : 255;
  if (zp < lo || zp > hi) {
    fail(std::string(name) + " must be in [" + to_string(lo) + ", " + to_string(hi) + "] for " +
         dtype_name(dtype) + ", got " + to_string(zp));
  }
}

void check_activation(const TensorRef& x, const char* name) {
  if (x.dtype != DType::u8 && x.dtype != DType::i8) {
    fail(std::string(name) + " must be uint8 or int8, got " + dtype_name(x.dtype));
  }
}

// Kernels read unsigned bytes: int8 activations are shifted by +128 (a sign-bit flip), which
// moves their zero point by 128.
int32_t kernel_zero_point(DType x_dtype, int32_t zp) { return x_dtype == DType::i8 ? zp + 128 : zp; }

struct Epilogue {
  std::vector<int32_t> offset;  // -zero_point * col_sums, wrapping
  std::vector<float> scale;     // x_scale * w_scale (/ out_scale for 8-bit output)
  std::vector<float> bias;      // 8-bit output: bias / out_scale + out_zero_point
  Int8Epilogue epi;
  float out_inv_scale = 1.0f;   // what 8-bit outputs divide by (see kernels.h)
};

Epilogue make_epilogue(const int32_t* col_sums, int64_t N, int32_t zp, const float* w_scale,
                       const float* bias, const QuantParams& q) {
  Epilogue e;
  e.offset.resize(N);
  for (int64_t n = 0; n < N; ++n) {
    e.offset[n] = static_cast<int32_t>(0u - static_cast<uint32_t>(zp) *
                                                static_cast<uint32_t>(col_sums[n]));
  }
  e.epi = Int8Epilogue{q.out_kind, e.offset.data(), nullptr, bias, q.clamp_min, q.clamp_max,
                       nullptr,    0,               false,   0.0f, 0};
  if (q.out_kind == Int8OutKind::i32) return e;
  e.scale.resize(N);
  for (int64_t n = 0; n < N; ++n) e.scale[n] = q.x_scale * w_scale[n];
  e.epi.scale = e.scale.data();
  if (q.out_kind == Int8OutKind::f32) return e;
  // 8-bit output: y in units of the output scale, shifted by the zero point (kernels.h)
  const float inv = 1.0f / q.out_scale, zp_out = static_cast<float>(q.out_zero_point);
  e.out_inv_scale = inv;
  e.bias.resize(N);
  for (int64_t n = 0; n < N; ++n) {
    e.scale[n] *= inv;
    e.bias[n] = (bias ? bias[n] : 0.0f) * inv + zp_out;
  }
  e.epi.bias = e.bias.data();
  e.epi.clamp_min = q.clamp_min * inv + zp_out;  // -inf and +inf stay infinite
  e.epi.clamp_max = q.clamp_max * inv + zp_out;
  return e;
}

// Fused kernels apply the epilogue in registers; the others return int32 and the epilogue
// runs as a second pass here.
void run_gemm(const Int8GemmKernel& k, const Int8GemmArgs& args) {
  if (k.fused_epilogue || args.epi.kind == Int8OutKind::i32) {
    k.gemm(args);
    return;
  }
  const Int8GemmShape s = args.shape;
  void* raw_sums = scratch(ScratchSlot::int32_sums, static_cast<size_t>(s.M * s.N) * 4);
  Int8GemmArgs raw_args = args;
  raw_args.c = raw_sums;
  raw_args.ldc = s.N;
  raw_args.epi.kind = Int8OutKind::i32;
  k.gemm(raw_args);
  Int8Epilogue epi = args.epi;
  epi.col_offset = nullptr;  // already added by the kernel
  const int32_t* acc = static_cast<const int32_t*>(raw_sums);
  char* c = static_cast<char*>(args.c);
  const int64_t row_bytes = args.ldc * out_elem_size(epi.kind);
  parallel_for(s.M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      ref::int8_epilogue_row(acc + m * s.N, 0, s.N, epi, c + m * row_bytes, m);
    }
  });
}

// dst[m][k] = src[m][k] ^ 0x80 (int8 to uint8 + 128). Locals with __restrict: byte stores may
// alias anything, so through captured references GCC would reload every pointer per byte.
void shift_to_unsigned(const int8_t* src, int64_t ld, int64_t rows, int64_t cols, uint8_t* dst) {
  parallel_for(rows, 64, [=](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const uint8_t* __restrict in = reinterpret_cast<const uint8_t*>(src + m * ld);
      uint8_t* __restrict out = dst + m * cols;
      for (int64_t k = 0; k < cols; ++k) out[k] = in[k] ^ 0x80;
    }
  });
}

void compute_col_sums(const int8_t* b, int64_t ldb, int64_t K, int64_t N, int32_t* sums) {
  for (int64_t n = 0; n < N; ++n) sums[n] = 0;
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t n = 0; n < N; ++n) sums[n] += b[k * ldb + n];
  }
}

void check_packed(const TensorRef& packed, const TensorRef& col_sums, Isa layout, int64_t K,
                  int64_t N, int64_t groups) {
  detail::check_packed_buffer(packed, DType::u8,
                              groups * static_cast<int64_t>(int8_packed_bytes(layout, K, N)));
  detail::check_vector(col_sums, "col_sums", DType::i32, groups * N);
}

void check_quant(const QuantParams& q, DType x_dtype, const TensorRef* w_scale, int64_t N,
                 const TensorRef* bias) {
  check_zero_point(q.x_zero_point, x_dtype, "x_zero_point");
  if (q.out_kind == Int8OutKind::i32) return;
  if (!(q.x_scale > 0) || !std::isfinite(q.x_scale)) fail("x_scale must be positive and finite");
  if (!w_scale) fail("w_scale is required for float or 8-bit output");
  detail::check_vector(*w_scale, "w_scale", DType::f32, N);
  if (bias) detail::check_vector(*bias, "bias", DType::f32, N);
  if (!(q.clamp_min <= q.clamp_max)) fail("clamp_min must be <= clamp_max");
  if (q.out_kind == Int8OutKind::s8 || q.out_kind == Int8OutKind::u8) {
    if (!(q.out_scale > 0) || !std::isfinite(q.out_scale)) {
      fail("out_scale must be positive and finite");
    }
    check_zero_point(q.out_zero_point, out_dtype(q.out_kind), "out_zero_point");
  }
}

}  // namespace

size_t int8_packed_bytes(Isa layout, int64_t K, int64_t N) {
  if (K < 1 || N < 1) fail("K and N must be >= 1");
  // Rounded to 64 so that per-group blocks placed back to back all stay 64-byte aligned.
  return (kernel_for_layout(layout).packed_bytes(K, N) + 63) / 64 * 64;
}

void int8_pack(Isa layout, const TensorRef& b, const TensorRef& packed,
               const TensorRef& col_sums) {
  check_tensor(b, "weight", DType::i8, 2);
  const int64_t K = b.sizes[0], N = b.sizes[1], ldb = detail::row_major_ld(b, "weight");
  const Int8GemmKernel k = kernel_for_layout(layout);
  check_packed(packed, col_sums, layout, K, N, 1);
  const int8_t* bp = static_cast<const int8_t*>(b.data);
  k.pack_b(bp, ldb, K, N, packed.data);
  compute_col_sums(bp, ldb, K, N, static_cast<int32_t*>(col_sums.data));
}

void int8_gemm(const TensorRef& a, const TensorRef& b, const TensorRef& c) {
  check_tensor(a, "a", DType::i8, 2);
  check_tensor(b, "b", DType::i8, 2);
  check_tensor(c, "out", DType::i32, 2);
  const int64_t M = a.sizes[0], K = a.sizes[1], N = b.sizes[1];
  if (b.sizes[0] != K) {
    fail("b must have " + to_string(K) + " rows (a is " + to_string(M) + "x" + to_string(K) +
         "), got " + to_string(b.sizes[0]));
  }
  if (c.sizes[0] != M || c.sizes[1] != N) fail("out must have shape [M, N]");
  const int64_t lda = detail::row_major_ld(a, "a"), ldb = detail::row_major_ld(b, "b");
  const int64_t ldc = detail::row_major_ld(c, "out");
  if (M == 0 || N == 0) return;
  int32_t* cp = static_cast<int32_t*>(c.data);
  if (K == 0) {
    for (int64_t m = 0; m < M; ++m) std::fill(cp + m * ldc, cp + m * ldc + N, 0);
    return;
  }
  const Int8GemmKernel k = int8_gemm_kernel();
  AlignedBuffer packed(k.packed_bytes(K, N));
  const int8_t* bp = static_cast<const int8_t*>(b.data);
  k.pack_b(bp, ldb, K, N, packed.data());
  std::vector<int32_t> sums(N);
  compute_col_sums(bp, ldb, K, N, sums.data());
  // a as unsigned bytes (a + 128); the shift comes back out through col_offset.
  const uint8_t* au = static_cast<const uint8_t*>(a.data);
  int64_t a_ld = lda;
  if (!k.signed_a) {
    uint8_t* shifted = static_cast<uint8_t*>(scratch(ScratchSlot::activations, M * K));
    shift_to_unsigned(static_cast<const int8_t*>(a.data), lda, M, K, shifted);
    au = shifted;
    a_ld = K;
  }
  const QuantParams q{0, 1.0f, Int8OutKind::i32, 0.0f, 0.0f, 1.0f, 0};
  Epilogue e = make_epilogue(sums.data(), N, 128, nullptr, nullptr, q);
  run_gemm(k, Int8GemmArgs{au, a_ld, packed.data(), {M, N, K}, cp, ldc, e.epi, k.signed_a,
                           sums.data()});
}

void int8_linear(const TensorRef& x, Isa layout, const TensorRef& packed,
                 const TensorRef& col_sums, int64_t K, int64_t N, const TensorRef* w_scale,
                 const TensorRef* bias, const QuantParams& q, const TensorRef& out) {
  check_activation(x, "x");
  if (x.ndim != 2) fail("x must be 2-D [M, K]");
  check_tensor(x, "x", x.dtype, 2);
  if (x.sizes[1] != K) fail("x must have K=" + to_string(K) + " columns, got " + to_string(x.sizes[1]));
  const Int8GemmKernel k = kernel_for_layout(layout);
  check_packed(packed, col_sums, layout, K, N, 1);
  check_quant(q, x.dtype, w_scale, N, bias);
  check_tensor(out, "out", out_dtype(q.out_kind), 2);
  const int64_t M = x.sizes[0];
  if (out.sizes[0] != M || out.sizes[1] != N) fail("out must have shape [M, N]");
  const int64_t lda = detail::row_major_ld(x, "x"), ldc = detail::row_major_ld(out, "out");
  if (M == 0) return;
  const uint8_t* a = static_cast<const uint8_t*>(x.data);
  int64_t a_ld = lda;
  const bool in_kernel_shift = x.dtype == DType::i8 && k.signed_a;
  if (x.dtype == DType::i8 && !k.signed_a) {
    uint8_t* au = static_cast<uint8_t*>(scratch(ScratchSlot::activations, M * K));
    shift_to_unsigned(reinterpret_cast<const int8_t*>(a), lda, M, K, au);
    a = au;
    a_ld = K;
  }
  Epilogue e = make_epilogue(static_cast<const int32_t*>(col_sums.data), N,
                             kernel_zero_point(x.dtype, q.x_zero_point),
                             w_scale ? static_cast<const float*>(w_scale->data) : nullptr,
                             bias ? static_cast<const float*>(bias->data) : nullptr, q);
  run_gemm(k, Int8GemmArgs{a, a_ld, packed.data, {M, N, K}, out.data, ldc, e.epi,
                           in_kernel_shift, static_cast<const int32_t*>(col_sums.data)});
}

namespace {

bool is_channels_last(const TensorRef& t) {
  const int64_t C = t.sizes[1], H = t.sizes[2], W = t.sizes[3];
  return (t.sizes[0] <= 1 || t.strides[0] == H * W * C) && (C <= 1 || t.strides[1] == 1) &&
         (H <= 1 || t.strides[2] == W * C) && (W <= 1 || t.strides[3] == C);
}

// The fused residual add of a conv (QuantParams::residual) into its epilogue, after checking
// the residual against the output it is added to.
void set_residual(const QuantParams& q, const TensorRef& out, float out_inv_scale,
                  Int8Epilogue* epi) {
  if (!q.residual) return;
  const TensorRef& r = *q.residual;
  check_activation(r, "residual");
  check_tensor(r, "residual", r.dtype, 4);
  for (int d = 0; d < 4; ++d) {
    if (r.sizes[d] != out.sizes[d]) fail("residual must have the output's shape");
  }
  if (!is_channels_last(r)) fail("residual must be channels_last contiguous (NHWC)");
  if (q.out_kind == Int8OutKind::i32) fail("a residual add needs float or 8-bit output");
  if (!(q.residual_scale > 0) || !std::isfinite(q.residual_scale)) {
    fail("residual_scale must be a finite positive number");
  }
  check_zero_point(q.residual_zero_point, r.dtype, "residual_zero_point");
  epi->residual = static_cast<const uint8_t*>(r.data);
  epi->residual_ld = out.sizes[1];
  epi->residual_signed = r.dtype == DType::i8;
  epi->residual_scale = q.residual_scale * out_inv_scale;
  epi->residual_zero_point = q.residual_zero_point;
}

// The conv's source image as the kernels read it: NHWC bytes, unsigned, each group's channels
// padded to a multiple of 4 (cg4; left unpadded when `compact`, see Int8RepackConvRowsFn), and
// spatially padded with the zero point so that every tap of every output pixel is inside it.
// The input is used in place when it already is all that. A compact copy ends with 64 slack
// bytes: its last segment reads up to 3 bytes past the image.
struct ConvSource {
  const uint8_t* data;
  int64_t Hs, Ws, Cs, cg4;
};

ConvSource conv_source(const uint8_t* x, const Conv2dGeometry& g, uint8_t flip, uint8_t zp,
                       bool compact) {
  ConvSource s;
  const int64_t cg = g.C / g.groups;
  s.cg4 = compact ? cg : (cg + 3) / 4 * 4;
  s.Cs = g.groups * s.cg4;
  s.Hs = (g.OH - 1) * g.stride_h + (g.KH - 1) * g.dil_h + 1;
  s.Ws = (g.OW - 1) * g.stride_w + (g.KW - 1) * g.dil_w + 1;
  const bool in_place = !compact && !flip && s.cg4 == cg && g.pad_top == 0 &&
                        g.pad_left == 0 && s.Hs <= g.H && s.Ws <= g.W;
  if (in_place) {
    s.data = x;
    s.Hs = g.H;
    s.Ws = g.W;
    return s;
  }
  const size_t image_bytes = static_cast<size_t>(g.N * s.Hs * s.Ws * s.Cs);
  uint8_t* dst = static_cast<uint8_t*>(
      scratch(ScratchSlot::conv_source, image_bytes + (compact ? 64 : 0)));
  if (compact) std::memset(dst + image_bytes, zp, 64);
  const int64_t cg4 = s.cg4, C = g.C, groups = g.groups;
  // Source columns lo .. hi hold input pixels (the rest is padding).
  const int64_t lo = std::min(std::max<int64_t>(g.pad_left, 0), s.Ws);
  const int64_t hi = std::max(lo, std::min(g.pad_left + g.W, s.Ws));
  parallel_for(g.N * s.Hs, 4, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / s.Hs, ih = row % s.Hs - g.pad_top;
      uint8_t* out = dst + row * s.Ws * s.Cs;
      if (ih < 0 || ih >= g.H) {
        std::memset(out, zp, s.Ws * s.Cs);
        continue;
      }
      if (cg4 == cg) {  // same pixel layout: one run per row
        const uint8_t* __restrict in = x + ((n * g.H + ih) * g.W + lo - g.pad_left) * C;
        uint8_t* __restrict o = out;
        std::memset(o, zp, lo * C);
        const int64_t bytes = (hi - lo) * C;
        if (flip) {
          for (int64_t i = 0; i < bytes; ++i) o[lo * C + i] = in[i] ^ flip;
        } else {
          std::memcpy(o + lo * C, in, bytes);
        }
        std::memset(o + hi * C, zp, (s.Ws - hi) * C);
        continue;
      }
      for (int64_t wp = 0; wp < s.Ws; ++wp, out += s.Cs) {
        const int64_t iw = wp - g.pad_left;
        if (iw < 0 || iw >= g.W) {
          std::memset(out, zp, s.Cs);
          continue;
        }
        const uint8_t* __restrict in = x + ((n * g.H + ih) * g.W + iw) * g.C;
        uint8_t* __restrict o = out;
        for (int64_t grp = 0; grp < groups; ++grp) {
          for (int64_t c = 0; c < cg; ++c) o[grp * cg4 + c] = in[grp * cg + c] ^ flip;
          for (int64_t c = cg; c < cg4; ++c) o[grp * cg4 + c] = zp;
        }
      }
    }
  });
  s.data = dst;
  return s;
}

// One row of stack_rows: pixel w of `out` gets C bytes of each of rows[0 .. stack) at w * C, in
// 8-byte moves in address order: each move's excess is overwritten by the next one (reads past
// a row stay inside the compact copy: its next row or its slack). A move that would run past
// the row is made exact instead: the next row may be another thread's (with 1 or 2 channels
// the excess of the last pixels reached it). kC: C when known at compile time (the moves of
// the 3-channel stem cost 3x more with C a variable), else 0.
template <int kC>
void stack_row(const uint8_t* const* rows, int64_t stack, int64_t C_runtime, int64_t W,
               uint8_t* __restrict out) {
  const int64_t C = kC ? kC : C_runtime, moved = (C + 7) / 8 * 8, end = W * stack * C;
  for (int64_t w = 0, at = 0; w < W; ++w) {
    for (int64_t j = 0; j < stack; ++j, at += C) {
      const uint8_t* from = rows[j] + w * C;
      if (at + moved > end) {
        std::memcpy(out + at, from, static_cast<size_t>(C));
      } else if (kC && kC <= 8) {
        std::memcpy(out + at, from, 8);
      } else {
        for (int64_t i = 0; i < C; i += 8) std::memcpy(out + at + i, from + i, 8);
      }
    }
  }
}

// The compact source (Cs = C) with `stack` image rows in each pixel: pixel (h, w) holds the C
// bytes of rows h, h + 1, ..., h + stack - 1 (zero point past the last row), for
// Int8RepackConvRowsFn's stacked kernel rows. Ends with 64 slack bytes, like the compact one.
ConvSource stack_rows(const ConvSource& compact, int64_t N, int64_t stack, uint8_t zp) {
  const int64_t C = compact.Cs, row_bytes = compact.Ws * C;
  ConvSource s = compact;
  s.Cs = s.cg4 = stack * C;
  const size_t image_bytes = static_cast<size_t>(N * s.Hs * s.Ws * s.Cs);
  // After the image: 64 slack bytes, then a row of zero points (+ 8 for the 8-byte reads).
  uint8_t* dst = static_cast<uint8_t*>(
      scratch(ScratchSlot::columns, image_bytes + 64 + static_cast<size_t>(row_bytes) + 8));
  uint8_t* zp_row = dst + image_bytes + 64;
  std::memset(dst + image_bytes, zp, 64 + static_cast<size_t>(row_bytes) + 8);
  parallel_for(N * s.Hs, 4, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t h = row % s.Hs;
      const uint8_t* rows[64];
      for (int64_t j = 0; j < stack; ++j) {
        rows[j] = h + j < s.Hs ? compact.data + (row + j) * row_bytes : zp_row;
      }
      uint8_t* out = dst + row * s.Ws * s.Cs;
      switch (C) {
        case 1: stack_row<1>(rows, stack, C, s.Ws, out); break;
        case 2: stack_row<2>(rows, stack, C, s.Ws, out); break;
        case 3: stack_row<3>(rows, stack, C, s.Ws, out); break;
        case 4: stack_row<4>(rows, stack, C, s.Ws, out); break;
        default: stack_row<0>(rows, stack, C, s.Ws, out);
      }
    }
  });
  s.data = dst;
  return s;
}

// Byte runs of one GEMM row within the source (see Int8ConvArgs): one per kernel row when a
// whole kernel row is contiguous (groups == 1, no horizontal dilation), else one per tap.
std::vector<int64_t> conv_segments(const Conv2dGeometry& g, const ConvSource& s,
                                   int64_t* segment_len) {
  std::vector<int64_t> offsets;
  const bool whole_rows = g.groups == 1 && g.dil_w == 1;
  *segment_len = whole_rows ? g.KW * s.cg4 : s.cg4;
  for (int64_t kh = 0; kh < g.KH; ++kh) {
    for (int64_t kw = 0; kw < (whole_rows ? 1 : g.KW); ++kw) {
      offsets.push_back((kh * g.dil_h * s.Ws + kw * g.dil_w) * s.Cs);
    }
  }
  return offsets;
}

}  // namespace

void int8_conv2d(const TensorRef& x, Isa layout, const TensorRef& packed,
                 const TensorRef& col_sums, int64_t C_per_group, int64_t KH, int64_t KW,
                 const TensorRef& w_scale, const TensorRef* bias, const ConvParams& p,
                 const QuantParams& q, const TensorRef& out) {
  check_activation(x, "input");
  check_tensor(x, "input", x.dtype, 4);
  check_tensor(out, "out", out_dtype(q.out_kind), 4);
  if (!is_channels_last(x)) fail("input must be channels_last contiguous (NHWC)");
  if (!is_channels_last(out)) fail("out must be channels_last contiguous (NHWC)");
  check_tensor(col_sums, "col_sums", DType::i32, 1);
  const int64_t OC = col_sums.sizes[0];
  const Conv2dGeometry g = detail::conv_geometry(x, out, OC, C_per_group, KH, KW, p);
  const int64_t ocg = OC / g.groups, cg4 = (C_per_group + 3) / 4 * 4, K = KH * KW * cg4;
  const Int8GemmKernel k = kernel_for_layout(layout);
  check_packed(packed, col_sums, layout, K, ocg, g.groups);
  check_quant(q, x.dtype, &w_scale, OC, bias);
  const int64_t M = g.N * g.OH * g.OW;
  if (M == 0) return;

  const int32_t zp = kernel_zero_point(x.dtype, q.x_zero_point);
  Epilogue e = make_epilogue(static_cast<const int32_t*>(col_sums.data), OC, zp,
                             static_cast<const float*>(w_scale.data),
                             bias ? static_cast<const float*>(bias->data) : nullptr, q);
  set_residual(q, out, e.out_inv_scale, &e.epi);
  const uint8_t flip = x.dtype == DType::i8 ? 0x80 : 0;
  const int64_t row_lq = (KW * C_per_group + 3) / 4 * 4;
  // AMX reads a source row in place only in whole 64-byte chunks: with kernel rows of at most
  // 32 bytes, `stack` image rows go into each source pixel so that one chunk covers `stack`
  // kernel rows (the 7x7 stem over 3 channels: 3 chunks per output pixel read in place, 1.5x
  // (batch 1) to 1.7x (batch 8) faster than the VNNI kernel). Only where the kernel rows add
  // up to 2 chunks or more: MobileNetV2's 3x3 stem (36 bytes in one chunk) ran 25% slower
  // than on the VNNI kernel, the stacking copy costing more than the tiles save.
  const int64_t stack =
      KW * C_per_group <= 32 ? std::min<int64_t>(KH, 64 / (KW * C_per_group)) : 1;
  if (layout == Isa::avx512_amx && k.conv && k.repack_conv_rows && g.groups == 1 &&
      g.dil_w == 1 && g.dil_h == 1 && stack > 1 && KH * row_lq >= 128) {
    const ConvSource src = stack_rows(
        conv_source(static_cast<const uint8_t*>(x.data), g, flip, static_cast<uint8_t>(zp), true),
        g.N, stack, static_cast<uint8_t>(zp));
    const int64_t segments = (KH + stack - 1) / stack, Lq = 64;
    void* rows_packed =
        scratch(ScratchSlot::packed_weights, int8_packed_bytes(layout, segments * Lq, OC));
    k.repack_conv_rows(packed.data, KH, KW, C_per_group, OC, stack, Lq, rows_packed);
    std::vector<int64_t> offsets(segments);
    for (int64_t j = 0; j < segments; ++j) offsets[j] = j * stack * src.Ws * src.Cs;
    k.conv(Int8ConvArgs{src.data, src.Hs, src.Ws, src.Cs, g.N, g.OH, g.OW, g.stride_h,
                        g.stride_w, 1, src.cg4, OC, offsets.data(), segments, Lq, rows_packed,
                        0, out.data, e.epi});
    return;
  }
  // Few channels: reduce over whole kernel rows of unpadded pixels (Int8RepackConvRowsFn).
  // The weight is repacked per call (~1 cycle per byte, per 32-column panel) to save one
  // vpdpbusd pair per output pixel and saved quad (per panel): taken when that saves at least
  // twice the repacking (always for the stem; not for a large weight over a few pixels). With
  // no quads saved (3x3 over 3 channels: 12 bytes either way) it still pays where the input
  // is large: the unpadded source is copied a row at a time, the channel-padded one a pixel at
  // a time (MobileNetV2's 3x3 stem at 224: 282 -> 80 us).
  const int64_t saved = KW * cg4 - row_lq;
  if (k.conv && k.repack_conv_rows && g.groups == 1 && C_per_group % 4 != 0 && g.dil_w == 1 &&
      saved >= 0 &&
      (saved > 0 ? M * saved >= 8 * row_lq : g.N * g.H * g.W >= KH * row_lq * OC)) {
    const ConvSource src = conv_source(static_cast<const uint8_t*>(x.data), g, flip,
                                       static_cast<uint8_t>(zp), true);
    const int64_t K_rows = KH * row_lq;
    void* rows_packed = scratch(ScratchSlot::packed_weights, int8_packed_bytes(layout, K_rows, OC));
    k.repack_conv_rows(packed.data, KH, KW, C_per_group, OC, 1, row_lq, rows_packed);
    std::vector<int64_t> segments(KH);
    for (int64_t kh = 0; kh < KH; ++kh) segments[kh] = kh * g.dil_h * src.Ws * src.Cs;
    k.conv(Int8ConvArgs{src.data, src.Hs, src.Ws, src.Cs, g.N, g.OH, g.OW, g.stride_h,
                        g.stride_w, 1, src.cg4, OC, segments.data(), KH, row_lq, rows_packed,
                        0, out.data, e.epi});
    return;
  }
  const ConvSource src =
      conv_source(static_cast<const uint8_t*>(x.data), g, flip, static_cast<uint8_t>(zp), false);
  int64_t segment_len;
  const std::vector<int64_t> segments = conv_segments(g, src, &segment_len);
  const int64_t group_bytes = static_cast<int64_t>(int8_packed_bytes(layout, K, ocg));
  if (k.conv) {
    k.conv(Int8ConvArgs{src.data, src.Hs, src.Ws, src.Cs, g.N, g.OH, g.OW, g.stride_h,
                        g.stride_w, g.groups, cg4, ocg, segments.data(),
                        static_cast<int64_t>(segments.size()), segment_len, packed.data,
                        group_bytes, out.data, e.epi});
    return;
  }
  // No implicit-GEMM kernel at this level: gather rows (im2col) in cache-sized chunks.
  const int64_t chunk = std::max<int64_t>(96, (int64_t{1} << 20) / K / 96 * 96);
  uint8_t* cols = static_cast<uint8_t*>(
      scratch(ScratchSlot::columns, static_cast<size_t>(std::min(chunk, M) * K)));
  const int64_t out_size = out_elem_size(q.out_kind);
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    Int8Epilogue epi = e.epi;
    epi.col_offset += grp * ocg;
    if (epi.scale) epi.scale += grp * ocg;
    if (epi.bias) epi.bias += grp * ocg;
    const void* b = static_cast<const char*>(packed.data) + grp * group_bytes;
    for (int64_t m0 = 0; m0 < M; m0 += chunk) {
      const int64_t rows = std::min(chunk, M - m0);
      parallel_for(rows, 32, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t m = m0 + r, n = m / (g.OH * g.OW), pix = m % (g.OH * g.OW);
          const uint8_t* base = src.data + ((n * src.Hs + pix / g.OW * g.stride_h) * src.Ws +
                                            pix % g.OW * g.stride_w) * src.Cs + grp * cg4;
          for (size_t s = 0; s < segments.size(); ++s) {
            std::memcpy(cols + r * K + s * segment_len, base + segments[s], segment_len);
          }
        }
      });
      char* c = static_cast<char*>(out.data) + (m0 * OC + grp * ocg) * out_size;
      Int8Epilogue chunk_epi = epi;
      if (chunk_epi.residual) chunk_epi.residual += m0 * OC + grp * ocg;
      run_gemm(k, Int8GemmArgs{cols, K, b, {rows, ocg, K}, c, OC, chunk_epi, false, nullptr});
    }
  }
}

void int8_depthwise_conv2d(const TensorRef& x, const TensorRef& weight, const TensorRef& col_sums,
                           int64_t KH, int64_t KW, const TensorRef& w_scale,
                           const TensorRef* bias, const ConvParams& p, const QuantParams& q,
                           const TensorRef& out) {
  check_activation(x, "input");
  check_tensor(x, "input", x.dtype, 4);
  check_tensor(out, "out", out_dtype(q.out_kind), 4);
  if (!is_channels_last(x)) fail("input must be channels_last contiguous (NHWC)");
  if (!is_channels_last(out)) fail("out must be channels_last contiguous (NHWC)");
  const int64_t C = x.sizes[1];
  if (p.groups != C) fail("a depthwise conv has groups == channels");
  const Conv2dGeometry g = detail::conv_geometry(x, out, C, 1, KH, KW, p);
  const int64_t Cp = (C + kInt8DepthwiseCBlock - 1) / kInt8DepthwiseCBlock * kInt8DepthwiseCBlock;
  check_tensor(weight, "weight", DType::i32, 2);
  check_contiguous(weight, "weight");
  if (weight.sizes[0] != KH * KW || weight.sizes[1] != Cp) {
    fail("depthwise weight must be [KH*KW, " + to_string(Cp) + "]");
  }
  detail::check_vector(col_sums, "col_sums", DType::i32, C);
  check_quant(q, x.dtype, &w_scale, C, bias);
  if (g.N * g.OH * g.OW == 0) return;
  // Kernels read int8 input as signed bytes: the correction uses the input's own zero point.
  Epilogue e = make_epilogue(static_cast<const int32_t*>(col_sums.data), C, q.x_zero_point,
                             static_cast<const float*>(w_scale.data),
                             bias ? static_cast<const float*>(bias->data) : nullptr, q);
  set_residual(q, out, e.out_inv_scale, &e.epi);
  Int8DepthwiseArgs a{};
  a.x = static_cast<const uint8_t*>(x.data);
  a.x_signed = x.dtype == DType::i8;
  a.zero_point = static_cast<uint8_t>(q.x_zero_point);
  a.N = g.N;
  a.H = g.H;
  a.W = g.W;
  a.C = C;
  a.OH = g.OH;
  a.OW = g.OW;
  a.KH = KH;
  a.KW = KW;
  a.stride_h = g.stride_h;
  a.stride_w = g.stride_w;
  a.dil_h = g.dil_h;
  a.dil_w = g.dil_w;
  a.pad_top = g.pad_top;
  a.pad_left = g.pad_left;
  a.weight = static_cast<const int32_t*>(weight.data);
  a.Cp = Cp;
  a.out = out.data;
  a.epi = e.epi;
  int8_depthwise_kernel()(a);
}

namespace {

// Where the sparse INT8 kernels' virtual planes go (see SparseInt8ConvArgs): 4 channels of a
// pixel in 4 bytes (blocks), or one byte per pixel and channel (groups).
void set_sparse_int8_planes(const Conv2dGeometry& g, bool grouped, SparseInt8ConvArgs* a) {
  const int64_t sets = grouped ? g.C / g.groups : (g.C / g.groups + 3) / 4;
  const int64_t pixel_bytes = grouped ? 1 : 4;
  a->Wq = g.OW + (g.KW - 1) * g.dil_w / g.stride_w;
  // Rows a multiple of 16 pixels (64 bytes) when that adds at most 1/8 of dropped columns: every
  // kh shift is then a whole number of cache lines, and the VNNI kernel aligns the kw shifts
  // with shifted copies of the planes (split cache-line loads cost ~30% there).
  const int64_t aligned_wq = (a->Wq + 15) / 16 * 16;
  if (!grouped && g.KH * g.KW > 1 && (aligned_wq - a->Wq) * 8 <= a->Wq) a->Wq = aligned_wq;
  a->Hq = g.OH + (g.KH - 1) * g.dil_h / g.stride_h + 1;  // + 1 row: slack for ow >= OW
  // Planes start 64-byte aligned: a 1x1 conv reads whole cache lines only.
  const int64_t align = 64 / pixel_bytes;
  a->plane_pixels = (a->Hq * a->Wq + align - 1) / align * align;
  a->quad_bytes = g.stride_h * g.stride_w * a->plane_pixels * pixel_bytes;
  a->group_bytes = sets * a->quad_bytes;
  a->image_bytes = g.groups * a->group_bytes;
  a->q_count = g.OH * a->Wq;
}

}  // namespace

void sparse_int8_conv2d(const TensorRef& x, const TensorRef& row_ptr, const TensorRef& block_k,
                        const TensorRef& values, const TensorRef& col_sums, int64_t C_per_group,
                        int64_t KH, int64_t KW, const TensorRef& w_scale, const TensorRef* bias,
                        const ConvParams& p, const QuantParams& q, const TensorRef& out) {
  check_activation(x, "input");
  check_tensor(x, "input", x.dtype, 4);
  check_tensor(out, "out", out_dtype(q.out_kind), 4);
  if (!is_channels_last(x)) fail("input must be channels_last contiguous (NHWC)");
  if (!is_channels_last(out)) fail("out must be channels_last contiguous (NHWC)");
  check_tensor(row_ptr, "row_ptr", DType::i64, 1);
  check_contiguous(row_ptr, "row_ptr");
  const int64_t OC = row_ptr.sizes[0] - 1;
  if (OC < 1) fail("row_ptr must have out_channels + 1 >= 2 elements");
  const Conv2dGeometry g = detail::conv_geometry(x, out, OC, C_per_group, KH, KW, p);
  check_tensor(block_k, "block_k", DType::i32, 1);
  check_contiguous(block_k, "block_k");
  const int64_t blocks = block_k.sizes[0];
  check_tensor(values, "values", DType::i8, 1);
  check_contiguous(values, "values");
  // The layout shows in the sizes: 4 weights per block index (blocks), or one weight per index
  // (groups of 4 indices).
  const bool grouped = blocks > 0 && values.sizes[0] == blocks;
  if (grouped && blocks % 4 != 0) fail("block_k of the group layout must hold 4 indices per group");
  if (!grouped && values.sizes[0] != 4 * blocks) {
    fail("values must hold 4 weights per block (or one per index in the group layout)");
  }
  const int64_t units = grouped ? blocks / 4 : blocks;  // blocks or groups
  if (reinterpret_cast<uintptr_t>(values.data) % 4 != 0) fail("values must be 4-byte aligned");
  detail::check_vector(col_sums, "col_sums", DType::i32, OC);
  check_quant(q, x.dtype, &w_scale, OC, bias);
  // The block arrays decide which memory the kernels read: check every index.
  const int64_t* rp = static_cast<const int64_t*>(row_ptr.data);
  if (rp[0] != 0 || rp[OC] != units) {
    fail("row_ptr must start at 0 and end at the block (or group) count");
  }
  for (int64_t oc = 0; oc < OC; ++oc) {
    if (rp[oc + 1] < rp[oc]) fail("row_ptr must be non-decreasing");
  }
  const int64_t k_count = (grouped ? C_per_group : (C_per_group + 3) / 4) * KH * KW;
  const int32_t* bk = static_cast<const int32_t*>(block_k.data);
  // 0 <= k < k_count for all: no negative k (OR keeps a sign bit) and every k - k_count
  // negative (AND keeps the sign bit). Two plain reductions: they vectorize, a compare per
  // entry did not (it was ~15% of a batch-1 layer's time).
  int32_t any_bits = 0, all_below = -1;
  const uint32_t limit = static_cast<uint32_t>(k_count);
  for (int64_t j = 0; j < blocks; ++j) {
    any_bits |= bk[j];
    all_below &= static_cast<int32_t>(static_cast<uint32_t>(bk[j]) - limit);  // no overflow
  }
  if (any_bits < 0 || all_below >= 0) {
    fail(grouped ? "block_k entry out of range [0, C/groups*KH*KW)"
                 : "block_k entry out of range [0, ceil(C/groups/4)*KH*KW)");
  }
  const int64_t M = g.N * g.OH * g.OW;
  if (M == 0) return;

  const int32_t zp = kernel_zero_point(x.dtype, q.x_zero_point);
  const uint8_t flip = x.dtype == DType::i8 ? 0x80 : 0;
  Epilogue e = make_epilogue(static_cast<const int32_t*>(col_sums.data), OC, zp,
                             static_cast<const float*>(w_scale.data),
                             bias ? static_cast<const float*>(bias->data) : nullptr, q);
  set_residual(q, out, e.out_inv_scale, &e.epi);
  const int32_t* values32 = static_cast<const int32_t*>(values.data);
  const uint8_t* xp = static_cast<const uint8_t*>(x.data);
  const SparseInt8ConvFn kernel =
      grouped ? sparse_int8_group_conv_kernel() : sparse_int8_conv_kernel();
  if (!kernel) {
    (grouped ? ref::sparse_int8_group_conv2d : ref::sparse_int8_conv2d)(
        xp, flip, static_cast<uint8_t>(zp), g, rp, bk, values32, e.epi, out.data);
    return;
  }
  SparseInt8ConvArgs a{};
  a.x = xp;
  a.g = g;
  a.flip = flip;
  a.zero_point = static_cast<uint8_t>(zp);
  // Window mode reads input pixel (oh * sh, ow * sw) without padding: only where every output
  // pixel has one (an output larger than the input allows pads, through the planes), and where
  // the window's offsets fit int32.
  const int64_t window_bytes = (grouped ? g.C : (g.C + 3) / 4 * 4) * kSparseInt8WindowLd;
  a.window = KH == 1 && KW == 1 && g.pad_top == 0 && g.pad_left == 0 && g.groups == 1 &&
             (g.OH - 1) * g.stride_h < g.H && (g.OW - 1) * g.stride_w < g.W &&
             window_bytes < (int64_t{1} << 31) - 1024;
  if (a.window) {  // see SparseInt8ConvArgs::window
    // The images as one tall image when the input rows are too (H = OH * stride): output pixels
    // of all images are consecutive in NHWC, so tasks fill whole 128-pixel tiles across image
    // boundaries (7 x 7 maps: 49 pixels per image; 1x1 layers on 14 x 14 and 7 x 7 maps at
    // batch 8 ran 15-22% faster).
    if (g.H == g.OH * g.stride_h) {
      a.g.H *= g.N;
      a.g.OH *= g.N;
      a.g.N = 1;
    }
    a.Wq = g.OW;
    a.Hq = a.g.OH;
    a.plane_pixels = kSparseInt8WindowLd;
    a.quad_bytes = (grouped ? 1 : 4) * kSparseInt8WindowLd;  // a row: one channel or quad
    a.group_bytes = window_bytes;
    a.image_bytes = 0;
    a.q_count = a.g.OH * g.OW;
    a.planes = nullptr;
  } else {
    set_sparse_int8_planes(g, grouped, &a);
    if (a.image_bytes > (int64_t{1} << 31) - 1024) {
      fail("input too large for the sparse INT8 kernel");
    }
    // Slack past the last plane: a task's last load may read up to 15 pixels (blocks, 60
    // bytes) or 63 pixels (groups) beyond it.
    a.planes = static_cast<uint8_t*>(
        scratch(ScratchSlot::conv_source, static_cast<size_t>(g.N * a.image_bytes + 128)));
    std::memset(a.planes + g.N * a.image_bytes, 0, 128);
  }
  const int64_t pixel_bytes = grouped ? 1 : 4;
  // Offsets per tap once, then per plane set (no divisions per entry: ~10% of a batch-1 call).
  std::vector<int32_t> k_offset(std::max(k_count, KH * KW));  // the taps even when C = 0
  for (int64_t t = 0; t < KH * KW; ++t) {
    const int64_t dh = t / KW * g.dil_h, dw = t % KW * g.dil_w;
    k_offset[t] = static_cast<int32_t>(
        ((dh % g.stride_h) * g.stride_w + dw % g.stride_w) * a.plane_pixels * pixel_bytes +
        ((dh / g.stride_h) * a.Wq + dw / g.stride_w) * pixel_bytes);
  }
  for (int64_t k = KH * KW; k < k_count; ++k) {
    k_offset[k] = k_offset[k - KH * KW] + static_cast<int32_t>(a.quad_bytes);
  }
  // Tiles of up to 128 virtual pixels in steps of 16 (blocks: one vector) or 64 (groups: one
  // byte-plane row load), evened out so the last one is not short.
  const int64_t step = grouped ? 64 : 16, steps = (a.q_count + step - 1) / step;
  const int64_t tiles = (steps + 128 / step - 1) / (128 / step);
  a.tile = (steps + tiles - 1) / tiles * step;
  a.row_ptr = rp;
  a.block_k = bk;
  a.values32 = values32;
  a.k_offset = k_offset.data();
  a.out = out.data;
  a.epi = e.epi;
  kernel(a);
}

}  // namespace pyfastcnn
