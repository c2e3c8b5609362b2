// Native entry points: check every precondition, then dispatch. Nothing here trusts Python.
#include "pyfastcnn/ops.h"

#include <algorithm>
#include <string>
#include <vector>

#include "pyfastcnn/dispatch.h"
#include "pyfastcnn/memory.h"
#include "pyfastcnn/parallel.h"
#include "bf16.h"
#include "op_checks.h"

namespace pyfastcnn {
namespace detail {

using std::to_string;

// Leading dimension of a row-major 2-D tensor with unit inner stride.
int64_t row_major_ld(const TensorRef& t, const char* name) {
  const int64_t rows = t.sizes[0], cols = t.sizes[1];
  if (cols > 1 && t.strides[1] != 1) fail(std::string(name) + " must have unit stride in dim 1");
  const int64_t ld = rows > 1 ? t.strides[0] : cols;
  if (ld < cols) fail(std::string(name) + " rows overlap (stride(0) < size(1))");
  return ld;
}

void check_vector(const TensorRef& t, const char* name, DType dtype, int64_t length) {
  check_tensor(t, name, dtype, 1);
  if (t.sizes[0] != length) {
    fail(std::string(name) + " must have " + to_string(length) + " elements, got " +
         to_string(t.sizes[0]));
  }
  check_contiguous(t, name);
}

Conv2dGeometry conv_geometry(const TensorRef& input, const TensorRef& output, int64_t OC,
                             int64_t C_per_group, int64_t KH, int64_t KW, const ConvParams& p) {
  Conv2dGeometry g{input.sizes[0], input.sizes[1], input.sizes[2], input.sizes[3],
                   OC, output.sizes[2], output.sizes[3], KH, KW,
                   p.stride_h, p.stride_w, p.pad_top, p.pad_left, p.dil_h, p.dil_w, p.groups};
  if (g.stride_h < 1 || g.stride_w < 1) fail("stride must be >= 1");
  if (g.dil_h < 1 || g.dil_w < 1) fail("dilation must be >= 1");
  if (g.pad_top < 0 || g.pad_left < 0) fail("padding must be >= 0");
  if (g.KH < 1 || g.KW < 1) fail("kernel size must be >= 1");
  if (g.groups < 1 || g.C % g.groups != 0 || g.OC % g.groups != 0) {
    fail("groups (" + to_string(g.groups) + ") must divide input channels (" + to_string(g.C) +
         ") and output channels (" + to_string(g.OC) + ")");
  }
  if (g.C / g.groups != C_per_group) {
    fail("weight expects " + to_string(C_per_group) + " input channels per group, input has " +
         to_string(g.C / g.groups));
  }
  if (output.sizes[0] != g.N || output.sizes[1] != g.OC) {
    fail("out must have shape [" + to_string(g.N) + ", " + to_string(g.OC) + ", OH, OW]");
  }
  return g;
}

void check_packed_buffer(const TensorRef& packed, DType dtype, int64_t elems) {
  check_tensor(packed, "packed", dtype, 1);
  check_contiguous(packed, "packed");
  if (packed.sizes[0] != elems) {
    fail("packed has " + std::to_string(packed.sizes[0]) + " elements, expected " +
         std::to_string(elems) + ": pack it for this weight and ISA");
  }
  if (reinterpret_cast<uintptr_t>(packed.data) % 64 != 0) fail("packed must be 64-byte aligned");
}

void check_packed_layout(Isa layout, bool has_kernel, Isa kernel_isa, const char* what) {
  if (static_cast<int>(layout) > static_cast<int>(selected_isa())) {
    fail(std::string("weight was packed for ISA '") + isa_name(layout) +
         "', above the selected ISA '" + isa_name(selected_isa()) + "': repack it");
  }
  if (!has_kernel || kernel_isa != layout) {
    fail(std::string("no ") + what + " packed layout for ISA '" + isa_name(layout) + "'");
  }
}

}  // namespace detail

using std::to_string;

namespace {

using detail::check_vector;
using detail::row_major_ld;

Conv2dIO conv_io(const TensorRef& input, const TensorRef& output) {
  Conv2dIO io{};
  io.input = static_cast<const float*>(input.data);
  io.output = static_cast<float*>(output.data);
  std::copy(input.strides, input.strides + 4, io.in_strides);
  std::copy(output.strides, output.strides + 4, io.out_strides);
  return io;
}

Conv2dEpilogue conv_epilogue(const TensorRef* bias, int64_t OC, const ConvParams& p) {
  if (bias) check_vector(*bias, "bias", DType::f32, OC);
  if (!(p.clamp_min <= p.clamp_max)) fail("clamp_min must be <= clamp_max");
  return Conv2dEpilogue{bias ? static_cast<const float*>(bias->data) : nullptr, p.clamp_min,
                        p.clamp_max};
}

}  // namespace

namespace {

// Vectorized sparse conv (see SparsePlanesArgs). The source holds, per image and input channel,
// one zero-padded plane per stride phase (ph, pw): plane[i][j] = x[i*sh + ph - pad_top]
// [j*sw + pw - pad_left]. Output pixel (oh, ow) becomes virtual pixel q = oh * Wq + ow, and the
// tap (c, kh, kw) reads plane (c, kh*dh % sh, kw*dw % sw) at q + (kh*dh / sh) * Wq + kw*dw / sw:
// a constant offset per non-zero. Columns ow >= OW of the virtual planes are computed and
// dropped by the kernel, which writes the output pixels to `output` (any layout). A 1x1
// stride-1 unpadded conv needs no planes: it reads its NCHW input in place (planes a multiple
// of 16 floats), or a task copies its pixels' channels (window mode, see SparsePlanesArgs).
// Virtual pixels per task of the AVX-512 kernel (the AVX2 one takes 64: its slices come out
// half as large as L1 would allow).
constexpr int64_t kSparseTile = 128;
// Input one slice reads per task (L1: 48 KiB). 1x1 convs take twice that: each input line
// meets only OC x density non-zeros per task, so slices buy less than the partial sums they
// store and reload (measured: 1x1 layers 10-15% faster at 48 KiB, 3x3 ones 3-20% slower).
constexpr int64_t kSparseWindowBytes = 24 << 10;

// CSR rows as the kernels need them: every entry in [0, cols), and each row strictly
// increasing (the kernels find a row's input-channel slices by walking it in order). Flags of
// one row, branch-free (checked one by one, per entry, the indices cost a quarter of a
// 90%-sparse 512-512-7 layer at 2 threads): 1 out of range, 2 not increasing.
uint8_t csr_row_flags(const int32_t* __restrict row, int64_t count, int64_t cols) {
  bool out_of_range = false, unordered = false;
  for (int64_t i = 0; i < count; ++i) {
    out_of_range |= static_cast<uint32_t>(row[i]) >= static_cast<uint64_t>(cols);
  }
  for (int64_t i = 1; i < count; ++i) unordered |= row[i] <= row[i - 1];
  return static_cast<uint8_t>((out_of_range ? 1 : 0) | (unordered ? 2 : 0));
}

void report_bad_csr_rows(const std::vector<uint8_t>& row_bad) {
  for (const uint8_t flags : row_bad) {
    if (flags & 1) fail("col_idx entry out of range [0, C/groups*KH*KW)");
    if (flags & 2) {
      fail("col_idx must be strictly increasing within each row (as pack_sparse makes it)");
    }
  }
}

// Checks every row (csr_row_flags), in parallel over output channels.
void check_csr_rows(const int64_t* row_ptr, const int32_t* col_idx, int64_t OC, int64_t cols) {
  std::vector<uint8_t> row_bad(static_cast<size_t>(OC), 0);
  parallel_for(OC, 64, [&](int64_t begin, int64_t end) {
    for (int64_t oc = begin; oc < end; ++oc) {
      row_bad[oc] = csr_row_flags(col_idx + row_ptr[oc], row_ptr[oc + 1] - row_ptr[oc], cols);
    }
  });
  report_bad_csr_rows(row_bad);
}

void prepare_sparse_plan(const int64_t* row_ptr, const int32_t* col_idx, const Conv2dGeometry& g,
                         int64_t cols, int64_t taps, int64_t slices, int64_t slice_channels,
                         bool window_mode, int64_t chan_stride, int64_t plane, int64_t Wq,
                         const int64_t* phase_slot, int64_t* plan);

void sparse_conv2d_planes(SparsePlanesFn kernel, const TensorRef& input, const int64_t* row_ptr,
                          const int32_t* col_idx, const float* values, const Conv2dGeometry& g,
                          const Conv2dEpilogue& epi, const TensorRef& output,
                          SparsePlanSlot* slot) {
  const int64_t sh = g.stride_h, sw = g.stride_w;
  const int64_t Wq = g.OW + (g.KW - 1) * g.dil_w / sw;
  const int64_t* is = input.strides;
  const int64_t* os = output.strides;
  // (OH, OW come from `out`: other sizes mean other bottom/right padding, for the copy)
  const bool one_by_one = g.KH == 1 && g.KW == 1 && sh == 1 && sw == 1 && g.pad_top == 0 &&
                          g.pad_left == 0 && g.OH == g.H && g.OW == g.W;
  const bool nchw = (g.N == 1 || is[0] == g.C * g.H * g.W) && (g.C == 1 || is[1] == g.H * g.W) &&
                    (g.H == 1 || is[2] == g.W) && (g.W == 1 || is[3] == 1);
  // A 1x1 conv's NCHW input is read in place when its planes are a multiple of 16 floats (its
  // loads then whole cache lines), else copied tile by tile into a buffer (window mode below,
  // groups 1: the 14x14 and 7x7 ResNet-50 layers 7-26% faster than with split loads in place).
  const bool in_place_source =
      one_by_one && nchw && ((g.H * g.W) % 16 == 0 || g.C == 1 || g.groups != 1);
  // Other 1x1 stride-1 unpadded convs (groups 1): no planes, each task copies its pixels'
  // channels slice by slice into a buffer in L1 (window mode, see SparsePlanesArgs), transposing
  // channels_last input: the whole input through the planes cost a tenth of a 90%-sparse
  // ResNet-50 at batch 1, and the kernel's loads from the buffer are whole cache lines.
  const bool channels_last = g.C > 1 && is[1] == 1 && (g.W == 1 || is[3] == g.C) &&
                             (g.H == 1 || is[2] == g.W * g.C) &&
                             (g.N == 1 || is[0] == g.H * g.W * g.C);
  const bool window_mode =
      !in_place_source && one_by_one && g.groups == 1 && (channels_last || nchw);
  // + 1 row: slack for the columns ow >= OW of the last row (none when reading in place)
  const int64_t Hq = g.OH + (g.KH - 1) * g.dil_h / sh + (in_place_source ? 0 : 1);
  // Only the stride phases some tap reads get a plane (a 1x1 stride-2 conv reads one of four:
  // copying all four cost it ~40% of its time). phase_slot[ph * sw + pw]: its plane, or -1.
  const int64_t taps = g.KH * g.KW;
  std::vector<int64_t> phase_slot(static_cast<size_t>(sh * sw), -1);
  int64_t reach = 0, phases_used = 0;
  for (int64_t ph = 0; ph < sh; ++ph) {
    for (int64_t pw = 0; pw < sw; ++pw) {
      bool used = false;
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t dh = (t / g.KW) * g.dil_h, dw = (t % g.KW) * g.dil_w;
        if (dh % sh != ph || dw % sw != pw) continue;
        used = true;
        reach = std::max(reach, (dh / sh) * Wq + dw / sw);
      }
      if (used) phase_slot[ph * sw + pw] = phases_used++;
    }
  }
  // Planes a multiple of 16 floats (64 bytes) apart: a 1x1 conv's loads are then whole cache
  // lines (57 x 56 floats per plane split every other channel's: 2x slower at 256-64-56).
  const int64_t plane = in_place_source ? Hq * Wq : (Hq * Wq + 15) / 16 * 16;
  const int64_t chan_stride = phases_used * plane, image_stride = g.C * chan_stride;
  const int64_t q_count = g.OH * Wq;
  const float* src = static_cast<const float*>(input.data);
  if (!in_place_source && !window_mode) {
    float* dst_all = static_cast<float*>(
        scratch(ScratchSlot::conv_source, static_cast<size_t>(g.N * image_stride + 128) * 4));
    const float* x = static_cast<const float*>(input.data);
    const int64_t sN = is[0], sC = is[1], sH = is[2], sW = is[3], H = g.H, W = g.W,
                  pt = g.pad_top, pl = g.pad_left;
    if (sC == 1 && g.C > 1) {
      // Channels innermost (channels_last): per image and block of 16 channels, each plane row
      // through the transpose kernel (live columns) with zeros around it. A task writes 16
      // planes only (one row of every channel per task touched a page per channel: 2x slower);
      // per channel, the copy below reads one float per input line (7x slower; 15x with 1 KB
      // between pixels).
      const int64_t C = g.C, c_blocks = (g.C + 15) / 16;
      const TransposeF32Fn transpose = transpose_f32_kernel();
      parallel_for(g.N * c_blocks, 1, [=](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          const int64_t n = item / c_blocks, c0 = item % c_blocks * 16;
          const int64_t cols = std::min<int64_t>(16, C - c0);
          for (int64_t ph = 0; ph < sh; ++ph) {
            for (int64_t pw = 0; pw < sw; ++pw) {
              if (phase_slot[ph * sw + pw] < 0) continue;
              float* dst = dst_all + n * image_stride + c0 * chan_stride +
                           phase_slot[ph * sw + pw] * plane;
              for (int64_t i = 0; i < Hq; ++i) {
                const int64_t ih = i * sh + ph - pt;
                // Columns j0 .. j1 read the image (iw = j * sw + pw - pl in [0, W)).
                int64_t j0 = 0, j1 = 0;
                if (ih >= 0 && ih < H) {
                  const int64_t lo = pl - pw, hi = W + pl - pw;  // j * sw in [lo, hi)
                  j0 = std::min(Wq, lo <= 0 ? 0 : (lo + sw - 1) / sw);
                  j1 = std::max(j0, std::min(Wq, hi <= 0 ? 0 : (hi + sw - 1) / sw));
                }
                float* row = dst + i * Wq;
                for (int64_t c = 0; c < cols && (j0 > 0 || j1 < Wq); ++c) {
                  std::fill(row + c * chan_stride, row + c * chan_stride + j0, 0.0f);
                  std::fill(row + c * chan_stride + j1, row + c * chan_stride + Wq, 0.0f);
                }
                if (j1 > j0) {
                  transpose(TransposeF32Args{x + n * sN + ih * sH + (j0 * sw + pw - pl) * sW + c0,
                                             row + j0, j1 - j0, cols, sw * sW, chan_stride});
                }
              }
            }
          }
        }
      });
    } else {
    parallel_for(g.N * g.C, 1, [=](int64_t begin, int64_t end) {
      for (int64_t nc = begin; nc < end; ++nc) {
        const float* __restrict in = x + (nc / (image_stride / chan_stride)) * sN +
                                     (nc % (image_stride / chan_stride)) * sC;
        for (int64_t ph = 0; ph < sh; ++ph) {
          for (int64_t pw = 0; pw < sw; ++pw) {
            if (phase_slot[ph * sw + pw] < 0) continue;
            float* __restrict dst = dst_all + nc * chan_stride + phase_slot[ph * sw + pw] * plane;
            for (int64_t i = 0; i < Hq; ++i) {
              const int64_t ih = i * sh + ph - pt;
              float* __restrict row = dst + i * Wq;
              if (ih < 0 || ih >= H) {
                std::fill(row, row + Wq, 0.0f);
                continue;
              }
              const float* __restrict in_row = in + ih * sH;
              if (sw == 1 && sW == 1) {  // NCHW rows: zeros, a copy, zeros
                const int64_t j0 = std::min(Wq, std::max<int64_t>(0, pl - pw));
                const int64_t j1 = std::max(j0, std::min(Wq, W + pl - pw));
                std::fill(row, row + j0, 0.0f);
                std::copy(in_row + (j0 + pw - pl), in_row + (j1 + pw - pl), row + j0);
                std::fill(row + j1, row + Wq, 0.0f);
                continue;
              }
              for (int64_t j = 0; j < Wq; ++j) {
                const int64_t iw = j * sw + pw - pl;
                row[j] = (iw >= 0 && iw < W) ? in_row[iw * sW] : 0.0f;
              }
            }
          }
        }
      }
    });
    }
    std::fill(dst_all + g.N * image_stride, dst_all + g.N * image_stride + 128, 0.0f);
    src = dst_all;
  }
  // Input channels per slice: a task's window is, per channel, the phase planes its taps use,
  // each from the tile's first pixel to the last pixel of the farthest tap.
  const int64_t cg = g.C / g.groups;
  const int64_t channel_bytes = phases_used * (kSparseTile + reach) * 4;
  const int64_t window = taps == 1 ? 2 * kSparseWindowBytes : kSparseWindowBytes;
  const int64_t per_slice = std::max<int64_t>(1, window / channel_bytes);
  const int64_t slices = (cg + per_slice - 1) / per_slice;
  const int64_t slice_channels = (cg + slices - 1) / slices;
  // The slice bounds and offsets: the slot's plan when it was made for this layout, else made
  // now (and kept in the slot).
  const int64_t cols = cg * taps, OC = g.OC, nnz = row_ptr[OC];
  // Everything the plan depends on (the offsets: geometry, plane layout and mode; the bounds:
  // slices; both: the arrays).
  const std::vector<int64_t> key = {
      g.C, g.H, g.W, g.OH, g.OW, OC, g.KH, g.KW, sh, sw, g.pad_top, g.pad_left, g.dil_h,
      g.dil_w, g.groups, in_place_source, window_mode, channels_last, slices, nnz,
      static_cast<int64_t>(reinterpret_cast<uintptr_t>(row_ptr)),
      static_cast<int64_t>(reinterpret_cast<uintptr_t>(col_idx))};
  std::shared_ptr<const std::vector<int64_t>> plan;
  if (slot) {
    std::lock_guard<std::mutex> lock(slot->mutex);
    if (slot->key == key) plan = slot->plan;
  }
  if (!plan) {
    auto made = std::make_shared<std::vector<int64_t>>(
        static_cast<size_t>((slices + 1) * OC + nnz + 1));
    prepare_sparse_plan(row_ptr, col_idx, g, cols, taps, slices, slice_channels, window_mode,
                        chan_stride, plane, Wq, phase_slot.data(), made->data());
    plan = made;
    if (slot) {
      std::lock_guard<std::mutex> lock(slot->mutex);
      slot->key = key;
      slot->plan = plan;
    }
  }
  const int64_t* bounds = plan->data();
  const int64_t* offset = bounds + (slices + 1) * OC;
  kernel(SparsePlanesArgs{src, g.N, window_mode ? g.H * g.W * g.C : image_stride, q_count, Wq,
                          window_mode ? g.C : 0, channels_last ? g.C : 1,
                          channels_last ? 1 : g.H * g.W, slice_channels, g.OC, slices, bounds,
                          offset,
                          values, epi.bias, epi.clamp_min, epi.clamp_max,
                          static_cast<float*>(output.data), g.OW,
                          {os[0], os[1], os[2], os[3]}});
}

// The plan of sparse_conv2d_planes (see SparsePlanSlot) into plan[(slices + 1) * OC + nnz]:
// per output channel the bounds of its slices (rows are sorted by column), then the non-zeros'
// offsets, in parallel over output channels (a serial regrouping per call cost as much as the
// conv on 7x7 maps at batch 1). Checks every index (fails on a bad one).
void prepare_sparse_plan(const int64_t* row_ptr, const int32_t* col_idx, const Conv2dGeometry& g,
                         int64_t cols, int64_t taps, int64_t slices, int64_t slice_channels,
                         bool window_mode, int64_t chan_stride, int64_t plane, int64_t Wq,
                         const int64_t* phase_slot, int64_t* plan) {
  const int64_t sh = g.stride_h, sw = g.stride_w, OC = g.OC;
  const int64_t cg = g.C / g.groups, ocg = OC / g.groups;
  int64_t* bounds = plan;
  int64_t* offset = plan + (slices + 1) * OC;
  // Per column of a group (c, kh, kw): its offset in this layout and its slice.
  int64_t* col_offset = static_cast<int64_t*>(
      scratch(ScratchSlot::weights, static_cast<size_t>(2 * cols) * 8));
  int64_t* col_slice = col_offset + cols;
  for (int64_t t = 0; t < taps; ++t) {  // the taps of channel 0, then shifted per channel
    const int64_t dh = (t / g.KW) * g.dil_h, dw = (t % g.KW) * g.dil_w;
    col_offset[t] = phase_slot[(dh % sh) * sw + dw % sw] * plane + (dh / sh) * Wq + dw / sw;
  }
  for (int64_t c = 0; c < cg; ++c) {
    for (int64_t t = 0; t < taps; ++t) {
      col_offset[c * taps + t] = window_mode ? c % slice_channels * kSparseWindowLd
                                             : col_offset[t] + c * chan_stride;
      col_slice[c * taps + t] = c / slice_channels;
    }
  }
  // The row's indices are checked here (see check_csr_rows) while it is in L1: a separate
  // pass over col_idx cost a sixth of a 90%-sparse 1x1 layer on a 7x7 map at batch 1.
  std::vector<uint8_t> row_bad(static_cast<size_t>(OC), 0);
  uint8_t* bad = row_bad.data();
  parallel_for(OC, 16, [=](int64_t begin, int64_t end) {
    for (int64_t oc = begin; oc < end; ++oc) {
      const int64_t group_offset = (oc / ocg) * cg * chan_stride, last = row_ptr[oc + 1];
      const int32_t* __restrict col = col_idx;
      const int64_t* __restrict col_off = col_offset;
      int64_t* __restrict off = offset;
      int64_t i = row_ptr[oc];
      bad[oc] = csr_row_flags(col + i, last - i, cols);
      if (bad[oc]) i = last;  // (reported below)
      for (int64_t j = 0; j < slices; ++j) {
        bounds[j * OC + oc] = i;
        for (; i < last && col_slice[col[i]] == j; ++i) off[i] = group_offset + col_off[col[i]];
      }
      bounds[slices * OC + oc] = last;
    }
  });
  report_bad_csr_rows(row_bad);
}

}  // namespace

void sparse_conv2d_csr(const TensorRef& input, const TensorRef& row_ptr, const TensorRef& col_idx,
                       const TensorRef& values, const TensorRef* bias, int64_t OC,
                       int64_t C_per_group, int64_t KH, int64_t KW, const ConvParams& p,
                       const TensorRef& output, SparsePlanSlot* plan) {
  check_tensor(row_ptr, "row_ptr", DType::i64, 1);
  check_contiguous(row_ptr, "row_ptr");
  if (OC < 1 || row_ptr.sizes[0] != OC + 1) fail("row_ptr must have out_channels + 1 elements");
  check_tensor(input, "input", DType::f32, 4);
  check_tensor(output, "out", DType::f32, 4);
  const Conv2dGeometry g = detail::conv_geometry(input, output, OC, C_per_group, KH, KW, p);
  const Conv2dEpilogue epi = conv_epilogue(bias, OC, p);

  // The CSR arrays decide which memory the kernel reads: check every index.
  const int64_t* rp = static_cast<const int64_t*>(row_ptr.data);
  check_tensor(col_idx, "col_idx", DType::i32, 1);
  check_contiguous(col_idx, "col_idx");
  const int64_t nnz = col_idx.sizes[0];
  check_vector(values, "values", DType::f32, nnz);
  if (rp[0] != 0 || rp[OC] != nnz) fail("row_ptr must start at 0 and end at nnz");
  for (int64_t oc = 0; oc < OC; ++oc) {
    if (rp[oc + 1] < rp[oc]) fail("row_ptr must be non-decreasing");
  }
  const int32_t* ci = static_cast<const int32_t*>(col_idx.data);
  const SparsePlanesFn planes = sparse_planes_kernel();
  if (output.numel() == 0 || !planes) check_csr_rows(rp, ci, OC, g.C / g.groups * KH * KW);
  if (output.numel() == 0) return;
  if (planes) {  // which checks the rows as it prepares them
    sparse_conv2d_planes(planes, input, rp, ci, static_cast<const float*>(values.data), g, epi,
                         output, plan);
    return;
  }
  const CsrWeight w{rp, ci, static_cast<const float*>(values.data)};
  sparse_conv2d_csr_kernel()(conv_io(input, output), g, w, epi);
}

namespace {

bool nhwc_contiguous(const TensorRef& t) {
  const int64_t C = t.sizes[1], H = t.sizes[2], W = t.sizes[3];
  return (t.sizes[0] <= 1 || t.strides[0] == H * W * C) && (C <= 1 || t.strides[1] == 1) &&
         (H <= 1 || t.strides[2] == W * C) && (W <= 1 || t.strides[3] == C);
}

// Implicit-GEMM FP32 conv (see F32ConvArgs): zero-padded NHWC source (the input itself when it
// already is one), weights packed per call, output NHWC (or staged, then scattered to `output`).
int64_t f32_group_floats(const F32ConvKernel& k, int64_t K, int64_t ocg) {
  return static_cast<int64_t>((k.packed_floats(K, ocg) + 15) / 16 * 16);  // 64-byte aligned groups
}

// B_g[k][n] = weight[g * ocg + n][c][kh][kw], k = (kh * KW + kw) * cg + c; then packed.
void pack_f32_conv_weights(const F32ConvKernel& k, const float* w, int64_t OC, int64_t cg,
                           int64_t KH, int64_t KW, int64_t groups, float* packed) {
  const int64_t ocg = OC / groups, K = KH * KW * cg, taps = KH * KW;
  const int64_t group_floats = f32_group_floats(k, K, ocg);
  float* b = static_cast<float*>(scratch(ScratchSlot::weights, static_cast<size_t>(K * ocg) * 4));
  for (int64_t grp = 0; grp < groups; ++grp) {
    for (int64_t n = 0; n < ocg; ++n) {
      const float* wn = w + (grp * ocg + n) * cg * taps;
      for (int64_t c = 0; c < cg; ++c) {
        for (int64_t t = 0; t < taps; ++t) b[(t * cg + c) * ocg + n] = wn[c * taps + t];
      }
    }
    k.pack_b(b, ocg, K, ocg, packed + grp * group_floats);
  }
}

// The byte/element runs of one implicit-GEMM row (see F32ConvArgs): per kernel row when a whole
// kernel row is contiguous (groups == 1, no horizontal dilation), else per tap; `run` elements
// each, cut into k-blocks of at most kBlockK (a block of a panel pair then stays in L2 while
// every row tile of a task uses it). Offsets are in elements of a source with row pitch Ws
// and pixel pitch Cs.
struct Segments {
  std::vector<int64_t> offset, len, block_begin{0};
};

Segments conv_segments(const Conv2dGeometry& g, int64_t Ws, int64_t Cs, int64_t run,
                       bool whole_rows) {
  constexpr int64_t kBlockK = 512;  // even: BF16 pieces stay even
  Segments s;
  int64_t in_block = 0;
  for (int64_t kh = 0; kh < g.KH; ++kh) {
    for (int64_t kw = 0; kw < (whole_rows ? 1 : g.KW); ++kw) {
      const int64_t start = (kh * g.dil_h * Ws + kw * g.dil_w) * Cs;
      for (int64_t done = 0; done < run;) {
        const int64_t len = std::min(run - done, kBlockK - in_block);
        s.offset.push_back(start + done);
        s.len.push_back(len);
        done += len;
        in_block += len;
        if (in_block == kBlockK) {
          s.block_begin.push_back(static_cast<int64_t>(s.len.size()));
          in_block = 0;
        }
      }
    }
  }
  if (in_block > 0 || s.block_begin.size() == 1) {
    s.block_begin.push_back(static_cast<int64_t>(s.len.size()));
  }
  return s;
}

struct F32Source {
  const float* data;
  int64_t Hs, Ws;
};

// The zero-padded NHWC source of an FP32 implicit-GEMM conv: the input itself when it already
// is one, else a copy (which also handles any input strides).
F32Source f32_conv_source(const TensorRef& input, const Conv2dGeometry& g) {
  const int64_t Hs = (g.OH - 1) * g.stride_h + (g.KH - 1) * g.dil_h + 1;
  const int64_t Ws = (g.OW - 1) * g.stride_w + (g.KW - 1) * g.dil_w + 1;
  const float* x = static_cast<const float*>(input.data);
  if (nhwc_contiguous(input) && g.pad_top == 0 && g.pad_left == 0 && Hs <= g.H && Ws <= g.W) {
    return {x, g.H, g.W};
  }
  float* dst = static_cast<float*>(
      scratch(ScratchSlot::conv_source, static_cast<size_t>(g.N * Hs * Ws * g.C) * 4));
  const int64_t sN = input.strides[0], sC = input.strides[1], sH = input.strides[2],
                sW = input.strides[3], C = g.C, H = g.H, W = g.W, pt = g.pad_top,
                pl = g.pad_left;
  parallel_for(g.N * Hs, 2, [=](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Hs, ih = row % Hs - pt;
      float* __restrict out = dst + row * Ws * C;
      for (int64_t wp = 0; wp < Ws; ++wp, out += C) {
        const int64_t iw = wp - pl;
        if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
          for (int64_t c = 0; c < C; ++c) out[c] = 0.0f;
          continue;
        }
        const float* __restrict in = x + n * sN + ih * sH + iw * sW;
        for (int64_t c = 0; c < C; ++c) out[c] = in[c * sC];
      }
    }
  });
  return {dst, Hs, Ws};
}

// Kernels write NHWC rows; an output in another layout is staged and copied (finish_output).
float* f32_conv_output(const TensorRef& output, const Conv2dGeometry& g) {
  if (nhwc_contiguous(output)) return static_cast<float*>(output.data);
  return static_cast<float*>(
      scratch(ScratchSlot::output, static_cast<size_t>(g.N * g.OH * g.OW * g.OC) * 4));
}

void f32_finish_output(const float* out, const TensorRef& output, const Conv2dGeometry& g) {
  if (out == output.data) return;
  float* dst = static_cast<float*>(output.data);
  const int64_t* os = output.strides;
  const int64_t OC = g.OC, OH = g.OH, OW = g.OW;
  parallel_for(g.N * OC, 4, [=](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / OC, oc = t % OC;
      for (int64_t pix = 0; pix < OH * OW; ++pix) {
        dst[n * os[0] + oc * os[1] + (pix / OW) * os[2] + (pix % OW) * os[3]] =
            out[(n * OH * OW + pix) * OC + oc];
      }
    }
  });
}

// Depthwise with one output per channel runs its own kernel where the level has one; packing
// (conv2d_f32_pack) and running (conv2d_f32_packed) decide with this same test.
bool use_depthwise(int64_t OC, int64_t C_per_group, int64_t groups) {
  return C_per_group == 1 && groups == OC && f32_depthwise_kernel() != nullptr;
}

// [C][1][KH][KW] -> [KH * KW][C]
void pack_depthwise(const float* w, int64_t C, int64_t taps, float* packed) {
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t t = 0; t < taps; ++t) packed[t * C + c] = w[c * taps + t];
  }
}

void run_depthwise(const TensorRef& input, const float* weight_tc, const Conv2dGeometry& g,
                   const Conv2dEpilogue& epi, const TensorRef& output) {
  // The kernel reads NHWC-contiguous input as is; other layouts are copied once.
  const float* x = static_cast<const float*>(input.data);
  if (!nhwc_contiguous(input)) {
    float* dst = static_cast<float*>(
        scratch(ScratchSlot::conv_source, static_cast<size_t>(g.N * g.H * g.W * g.C) * 4));
    const int64_t sN = input.strides[0], sC = input.strides[1], sH = input.strides[2],
                  sW = input.strides[3], C = g.C, H = g.H, W = g.W;
    parallel_for(g.N * H, 2, [=](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, ih = row % H;
        for (int64_t iw = 0; iw < W; ++iw) {
          const float* __restrict in = x + n * sN + ih * sH + iw * sW;
          float* __restrict out = dst + (row * W + iw) * C;
          for (int64_t c = 0; c < C; ++c) out[c] = in[c * sC];
        }
      }
    });
    x = dst;
  }
  float* out = f32_conv_output(output, g);
  f32_depthwise_kernel()(F32DepthwiseArgs{x, g.H, g.W, g.C, g.N, g.OH, g.OW, g.stride_h,
                                          g.stride_w, g.KH, g.KW, g.dil_h, g.dil_w, g.pad_top,
                                          g.pad_left, weight_tc, epi.bias, epi.clamp_min,
                                          epi.clamp_max, out});
  f32_finish_output(out, output, g);
}

void conv2d_f32_implicit(const F32ConvKernel& k, const TensorRef& input, const float* packed,
                         const Conv2dGeometry& g, const Conv2dEpilogue& epi,
                         const TensorRef& output) {
  const int64_t cg = g.C / g.groups, ocg = g.OC / g.groups, K = g.KH * g.KW * cg;
  const int64_t group_floats = f32_group_floats(k, K, ocg);
  const F32Source source = f32_conv_source(input, g);
  const float* src = source.data;
  const int64_t src_h = source.Hs, src_w = source.Ws;
  const bool whole_rows = g.groups == 1 && g.dil_w == 1;
  const Segments seg = conv_segments(g, src_w, g.C, whole_rows ? g.KW * cg : cg, whole_rows);
  float* out = f32_conv_output(output, g);
  k.conv(F32ConvArgs{src, src_h, src_w, g.C, g.N, g.OH, g.OW, g.stride_h, g.stride_w, g.groups,
                     cg, ocg, seg.offset.data(), seg.len.data(),
                     static_cast<int64_t>(seg.len.size()), seg.block_begin.data(),
                     static_cast<int64_t>(seg.block_begin.size()) - 1, packed, group_floats,
                     out, epi.bias, epi.clamp_min, epi.clamp_max});
  f32_finish_output(out, output, g);
}

}  // namespace

void sparse_conv2d_block(const TensorRef& input, const TensorRef& panel_row_ptr,
                         const TensorRef& k_index, const TensorRef& rows, int64_t OC,
                         int64_t C_per_group, int64_t KH, int64_t KW, const TensorRef* bias,
                         const ConvParams& p, const TensorRef& output) {
  check_tensor(input, "input", DType::f32, 4);
  check_tensor(output, "out", DType::f32, 4);
  const Conv2dGeometry g = detail::conv_geometry(input, output, OC, C_per_group, KH, KW, p);
  const Conv2dEpilogue epi = conv_epilogue(bias, OC, p);
  const int64_t ocg = OC / g.groups, panels = (ocg + kSparseBlockCols - 1) / kSparseBlockCols;
  const int64_t K = KH * KW * C_per_group;
  check_tensor(panel_row_ptr, "row_ptr", DType::i64, 1);
  check_contiguous(panel_row_ptr, "row_ptr");
  if (panel_row_ptr.sizes[0] != g.groups * panels + 1) {
    fail("row_ptr must have groups * ceil(OC / groups / 32) + 1 = " +
         to_string(g.groups * panels + 1) + " entries");
  }
  check_tensor(k_index, "col_idx", DType::i32, 1);
  check_contiguous(k_index, "col_idx");
  const int64_t kept = k_index.sizes[0];
  detail::check_vector(rows, "values", DType::f32, kept * kSparseBlockCols);
  const int64_t* rp = static_cast<const int64_t*>(panel_row_ptr.data);
  const int32_t* ki = static_cast<const int32_t*>(k_index.data);
  if (rp[0] != 0 || rp[g.groups * panels] != kept) fail("row_ptr must start at 0 and end at nnz");
  for (int64_t i = 0; i < g.groups * panels; ++i) {
    if (rp[i + 1] < rp[i]) fail("row_ptr must be non-decreasing");
  }
  for (int64_t j = 0; j < kept; ++j) {
    if (ki[j] < 0 || ki[j] >= K) fail("col_idx entry out of range [0, C/groups*KH*KW)");
  }
  if (output.numel() == 0) return;
  const float* values = static_cast<const float*>(rows.data);
  const F32BlockSparseFn kernel = f32_block_sparse_kernel();
  if (!kernel) {
    // No block kernel at this level (scalar): the same non-zeros as CSR rows sorted by column,
    // through the reference.
    std::vector<int64_t> csr_rows(1, 0);
    std::vector<std::pair<int32_t, float>> row;
    std::vector<int32_t> cols;
    std::vector<float> vals;
    for (int64_t oc = 0; oc < OC; ++oc) {
      const int64_t grp = oc / ocg, panel = grp * panels + (oc % ocg) / kSparseBlockCols;
      const int64_t lane = (oc % ocg) % kSparseBlockCols;
      row.clear();
      for (int64_t j = rp[panel]; j < rp[panel + 1]; ++j) {
        const float v = values[j * kSparseBlockCols + lane];
        if (v != 0.0f) {  // block order (kh, kw, c) to CSR order (c, kh, kw)
          row.emplace_back(static_cast<int32_t>((ki[j] % C_per_group) * KH * KW +
                                                ki[j] / C_per_group), v);
        }
      }
      std::sort(row.begin(), row.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
      for (const auto& e : row) {
        cols.push_back(e.first);
        vals.push_back(e.second);
      }
      csr_rows.push_back(static_cast<int64_t>(cols.size()));
    }
    sparse_conv2d_csr_kernel()(conv_io(input, output), g,
                               CsrWeight{csr_rows.data(), cols.data(), vals.data()}, epi);
    return;
  }
  const F32Source source = f32_conv_source(input, g);
  std::vector<int64_t> offsets(kept);
  for (int64_t j = 0; j < kept; ++j) {
    const int64_t c = ki[j] % C_per_group, t = ki[j] / C_per_group;
    offsets[j] = ((t / KW) * g.dil_h * source.Ws + (t % KW) * g.dil_w) * g.C + c;
  }
  float* out = f32_conv_output(output, g);
  kernel(F32BlockSparseArgs{source.data, source.Hs, source.Ws, g.C, g.N, g.OH, g.OW, g.stride_h,
                            g.stride_w, g.groups, C_per_group, ocg, rp, offsets.data(), values,
                            out, epi.bias, epi.clamp_min, epi.clamp_max});
  f32_finish_output(out, output, g);
}

void conv2d_dense(const TensorRef& input, const TensorRef& weight, const TensorRef* bias,
                  const ConvParams& p, const TensorRef& output) {
  check_tensor(weight, "weight", DType::f32, 4);
  check_contiguous(weight, "weight");
  check_tensor(input, "input", DType::f32, 4);
  check_tensor(output, "out", DType::f32, 4);
  const Conv2dGeometry g = detail::conv_geometry(input, output, weight.sizes[0],
                                                 weight.sizes[1], weight.sizes[2],
                                                 weight.sizes[3], p);
  const Conv2dEpilogue epi = conv_epilogue(bias, g.OC, p);
  if (output.numel() == 0) return;
  if (use_depthwise(g.OC, g.C / g.groups, g.groups)) {
    float* packed = static_cast<float*>(
        scratch(ScratchSlot::packed_weights, static_cast<size_t>(g.C * g.KH * g.KW) * 4));
    pack_depthwise(static_cast<const float*>(weight.data), g.C, g.KH * g.KW, packed);
    run_depthwise(input, packed, g, epi, output);
    return;
  }
  const F32ConvKernel k = f32_conv_kernel();
  if (k.conv) {
    float* packed = static_cast<float*>(scratch(
        ScratchSlot::packed_weights,
        static_cast<size_t>(g.groups * f32_group_floats(k, g.KH * g.KW * (g.C / g.groups),
                                                        g.OC / g.groups)) * 4));
    pack_f32_conv_weights(k, static_cast<const float*>(weight.data), g.OC, g.C / g.groups, g.KH,
                          g.KW, g.groups, packed);
    conv2d_f32_implicit(k, input, packed, g, epi, output);
    return;
  }
  conv2d_dense_kernel()(conv_io(input, output), g, static_cast<const float*>(weight.data), epi);
}

namespace {

F32ConvKernel f32_kernel_for_layout(Isa layout) {
  const F32ConvKernel k = f32_conv_kernel();
  detail::check_packed_layout(layout, k.conv != nullptr, k.isa, "FP32 conv");
  return k;
}

}  // namespace

size_t conv2d_f32_packed_floats(Isa layout, int64_t OC, int64_t C_per_group, int64_t KH,
                                int64_t KW, int64_t groups) {
  if (OC < 1 || C_per_group < 0 || KH < 1 || KW < 1 || groups < 1 || OC % groups != 0) {
    fail("bad conv weight geometry");
  }
  const F32ConvKernel k = f32_kernel_for_layout(layout);
  if (use_depthwise(OC, C_per_group, groups)) return static_cast<size_t>((OC * KH * KW + 15) / 16 * 16);
  return static_cast<size_t>(groups * f32_group_floats(k, KH * KW * C_per_group, OC / groups));
}

void conv2d_f32_pack(Isa layout, const TensorRef& weight, int64_t groups,
                     const TensorRef& packed) {
  check_tensor(weight, "weight", DType::f32, 4);
  check_contiguous(weight, "weight");
  const int64_t OC = weight.sizes[0], cg = weight.sizes[1], KH = weight.sizes[2],
                KW = weight.sizes[3];
  const size_t floats = conv2d_f32_packed_floats(layout, OC, cg, KH, KW, groups);
  detail::check_packed_buffer(packed, DType::f32, static_cast<int64_t>(floats));
  if (use_depthwise(OC, cg, groups)) {
    pack_depthwise(static_cast<const float*>(weight.data), OC, KH * KW,
                   static_cast<float*>(packed.data));
    return;
  }
  pack_f32_conv_weights(f32_kernel_for_layout(layout), static_cast<const float*>(weight.data),
                        OC, cg, KH, KW, groups, static_cast<float*>(packed.data));
}

void conv2d_f32_packed(const TensorRef& input, Isa layout, const TensorRef& packed, int64_t OC,
                       int64_t C_per_group, int64_t KH, int64_t KW, const TensorRef* bias,
                       const ConvParams& p, const TensorRef& output) {
  check_tensor(input, "input", DType::f32, 4);
  check_tensor(output, "out", DType::f32, 4);
  const Conv2dGeometry g = detail::conv_geometry(input, output, OC, C_per_group, KH, KW, p);
  const Conv2dEpilogue epi = conv_epilogue(bias, OC, p);
  const size_t floats = conv2d_f32_packed_floats(layout, OC, C_per_group, KH, KW, g.groups);
  detail::check_packed_buffer(packed, DType::f32, static_cast<int64_t>(floats));
  if (output.numel() == 0) return;
  if (use_depthwise(OC, C_per_group, g.groups)) {
    run_depthwise(input, static_cast<const float*>(packed.data), g, epi, output);
    return;
  }
  conv2d_f32_implicit(f32_kernel_for_layout(layout), input,
                      static_cast<const float*>(packed.data), g, epi, output);
}

namespace {

Bf16ConvKernel bf16_kernel_for_layout(Isa layout) {
  const Bf16ConvKernel k = bf16_conv_kernel();
  detail::check_packed_layout(layout, k.conv != nullptr, k.isa, "BF16 conv");
  return k;
}

int64_t even(int64_t x) { return (x + 1) / 2 * 2; }

int64_t bf16_group_elems(const Bf16ConvKernel& k, int64_t K, int64_t ocg) {
  return static_cast<int64_t>((k.packed_elems(K, ocg) + 31) / 32 * 32);  // 64-byte aligned
}

}  // namespace

size_t conv2d_bf16_packed_elems(Isa layout, int64_t OC, int64_t C_per_group, int64_t KH,
                                int64_t KW, int64_t groups) {
  if (OC < 1 || C_per_group < 0 || KH < 1 || KW < 1 || groups < 1 || OC % groups != 0) {
    fail("bad conv weight geometry");
  }
  const Bf16ConvKernel k = bf16_kernel_for_layout(layout);
  return static_cast<size_t>(groups *
                             bf16_group_elems(k, KH * KW * even(C_per_group), OC / groups));
}

void conv2d_bf16_pack(Isa layout, const TensorRef& weight, int64_t groups,
                      const TensorRef& packed) {
  check_tensor(weight, "weight", DType::f32, 4);
  check_contiguous(weight, "weight");
  const int64_t OC = weight.sizes[0], cg = weight.sizes[1], KH = weight.sizes[2],
                KW = weight.sizes[3];
  detail::check_packed_buffer(
      packed, DType::bf16,
      static_cast<int64_t>(conv2d_bf16_packed_elems(layout, OC, cg, KH, KW, groups)));
  const Bf16ConvKernel k = bf16_kernel_for_layout(layout);
  // B_g[k][n], k = (kh * KW + kw) * cg2 + c, channels cg .. cg2 zero; then packed.
  const int64_t cg2 = even(cg), ocg = OC / groups, K = KH * KW * cg2, taps = KH * KW;
  const int64_t group_elems = bf16_group_elems(k, K, ocg);
  const float* w = static_cast<const float*>(weight.data);
  std::vector<float> b(static_cast<size_t>(K * ocg));
  for (int64_t grp = 0; grp < groups; ++grp) {
    std::fill(b.begin(), b.end(), 0.0f);
    for (int64_t n = 0; n < ocg; ++n) {
      const float* wn = w + (grp * ocg + n) * cg * taps;
      for (int64_t c = 0; c < cg; ++c) {
        for (int64_t t = 0; t < taps; ++t) b[(t * cg2 + c) * ocg + n] = wn[c * taps + t];
      }
    }
    k.pack_b(b.data(), ocg, K, ocg, static_cast<uint16_t*>(packed.data) + grp * group_elems);
  }
}

void conv2d_bf16_packed(const TensorRef& input, Isa layout, const TensorRef& packed, int64_t OC,
                        int64_t C_per_group, int64_t KH, int64_t KW, const TensorRef* bias,
                        const ConvParams& p, const TensorRef& output) {
  check_tensor(input, "input", DType::f32, 4);
  check_tensor(output, "out", DType::f32, 4);
  const Conv2dGeometry g = detail::conv_geometry(input, output, OC, C_per_group, KH, KW, p);
  const Conv2dEpilogue epi = conv_epilogue(bias, OC, p);
  const Bf16ConvKernel k = bf16_kernel_for_layout(layout);
  detail::check_packed_buffer(
      packed, DType::bf16,
      static_cast<int64_t>(conv2d_bf16_packed_elems(layout, OC, C_per_group, KH, KW, g.groups)));
  if (output.numel() == 0) return;
  const int64_t cg = C_per_group, cg2 = even(cg), ocg = OC / g.groups, K = KH * KW * cg2;
  // Source: zero-padded NHWC bfloat16, each group's channels padded to cg2.
  const int64_t Hs = (g.OH - 1) * g.stride_h + (g.KH - 1) * g.dil_h + 1;
  const int64_t Ws = (g.OW - 1) * g.stride_w + (g.KW - 1) * g.dil_w + 1;
  const int64_t Cs = g.groups * cg2;
  uint16_t* src = static_cast<uint16_t*>(
      scratch(ScratchSlot::conv_source, static_cast<size_t>(g.N * Hs * Ws * Cs) * 2));
  const float* x = static_cast<const float*>(input.data);
  const int64_t sN = input.strides[0], sC = input.strides[1], sH = input.strides[2],
                sW = input.strides[3], H = g.H, W = g.W, pt = g.pad_top, pl = g.pad_left,
                groups = g.groups;
  const Bf16ConvertFn convert = k.convert;
  const bool contiguous_channels = sC == 1 && cg == cg2;  // a pixel's channels in one run
  parallel_for(g.N * Hs, 2, [=](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Hs, ih = row % Hs - pt;
      uint16_t* __restrict out = src + row * Ws * Cs;
      for (int64_t wp = 0; wp < Ws; ++wp, out += Cs) {
        const int64_t iw = wp - pl;
        if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
          for (int64_t c = 0; c < Cs; ++c) out[c] = 0;
          continue;
        }
        const float* __restrict in = x + n * sN + ih * sH + iw * sW;
        if (contiguous_channels) {
          convert(in, Cs, out);
          continue;
        }
        for (int64_t grp = 0; grp < groups; ++grp) {
          for (int64_t c = 0; c < cg; ++c) out[grp * cg2 + c] = to_bf16(in[(grp * cg + c) * sC]);
          for (int64_t c = cg; c < cg2; ++c) out[grp * cg2 + c] = 0;
        }
      }
    }
  });
  const bool whole_rows = g.groups == 1 && g.dil_w == 1;
  const Segments seg = conv_segments(g, Ws, Cs, whole_rows ? g.KW * cg2 : cg2, whole_rows);
  float* out = f32_conv_output(output, g);
  k.conv(Bf16ConvArgs{src, Hs, Ws, Cs, g.N, g.OH, g.OW, g.stride_h, g.stride_w, g.groups, cg2,
                      ocg, seg.offset.data(), seg.len.data(),
                      static_cast<int64_t>(seg.len.size()), seg.block_begin.data(),
                      static_cast<int64_t>(seg.block_begin.size()) - 1,
                      static_cast<const uint16_t*>(packed.data), bf16_group_elems(k, K, ocg),
                      out, epi.bias, epi.clamp_min, epi.clamp_max});
  f32_finish_output(out, output, g);
}

}  // namespace pyfastcnn
