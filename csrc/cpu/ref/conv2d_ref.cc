// Scalar direct convolution: the ground truth the ISA kernels are tested against. Sparse and
// dense weights share one loop: each weight tap adds (value x shifted input plane) to a
// per-(image, output channel) accumulator plane, so work is proportional to the taps visited.
#include <algorithm>
#include <vector>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace ref {
namespace {

struct Range {
  int64_t lo, hi;  // empty when lo >= hi
};

// Output positions o in [0, out) whose input position o * stride + offset lies in [0, in).
Range valid_outputs(int64_t out, int64_t in, int64_t stride, int64_t offset) {
  const int64_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t last = in - 1 - offset;
  const int64_t hi = last < 0 ? 0 : std::min(out, last / stride + 1);
  return {lo, hi};
}

// plane[oh][ow] += v * channel[oh*sh + kh*dh - pad_top][ow*sw + kw*dw - pad_left]
void accumulate_tap(float* plane, const float* channel, const int64_t* in_strides,
                    const Conv2dGeometry& g, int64_t kh, int64_t kw, float v) {
  const int64_t off_h = kh * g.dil_h - g.pad_top, off_w = kw * g.dil_w - g.pad_left;
  const Range rh = valid_outputs(g.OH, g.H, g.stride_h, off_h);
  const Range rw = valid_outputs(g.OW, g.W, g.stride_w, off_w);
  const int64_t sH = in_strides[2], sW = in_strides[3];
  for (int64_t oh = rh.lo; oh < rh.hi; ++oh) {
    const float* row = channel + (oh * g.stride_h + off_h) * sH + off_w * sW;
    float* out = plane + oh * g.OW;
    for (int64_t ow = rw.lo; ow < rw.hi; ++ow) out[ow] += v * row[ow * g.stride_w * sW];
  }
}

float clamp_keep_nan(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }

// for_each_tap(oc, visit) calls visit(col, value) for the taps of output channel oc, with
// col = (ci_in_group * KH + kh) * KW + kw.
template <class ForEachTap>
void direct_conv(const Conv2dIO& io, const Conv2dGeometry& g, const Conv2dEpilogue& epi,
                 const ForEachTap& for_each_tap) {
  const int64_t oc_per_group = g.OC / g.groups, c_per_group = g.C / g.groups;
  const int64_t kernel_area = g.KH * g.KW;
  parallel_for(g.N * g.OC, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> plane(g.OH * g.OW);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.OC, oc = task % g.OC;
      const float* image = io.input + n * io.in_strides[0] +
                           (oc / oc_per_group) * c_per_group * io.in_strides[1];
      std::fill(plane.begin(), plane.end(), 0.0f);
      for_each_tap(oc, [&](int64_t col, float v) {
        const int64_t ci = col / kernel_area, r = col % kernel_area;
        accumulate_tap(plane.data(), image + ci * io.in_strides[1], io.in_strides, g, r / g.KW,
                       r % g.KW, v);
      });
      const float bias = epi.bias ? epi.bias[oc] : 0.0f;
      float* out = io.output + n * io.out_strides[0] + oc * io.out_strides[1];
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          out[oh * io.out_strides[2] + ow * io.out_strides[3]] =
              clamp_keep_nan(plane[oh * g.OW + ow] + bias, epi.clamp_min, epi.clamp_max);
        }
      }
    }
  });
}

}  // namespace

void sparse_conv2d_csr(const Conv2dIO& io, const Conv2dGeometry& g, const CsrWeight& w,
                       const Conv2dEpilogue& epi) {
  direct_conv(io, g, epi, [&](int64_t oc, const auto& visit) {
    for (int64_t i = w.row_ptr[oc]; i < w.row_ptr[oc + 1]; ++i) visit(w.col_idx[i], w.values[i]);
  });
}

void conv2d_dense(const Conv2dIO& io, const Conv2dGeometry& g, const float* weight,
                  const Conv2dEpilogue& epi) {
  const int64_t taps = g.C / g.groups * g.KH * g.KW;
  direct_conv(io, g, epi, [&](int64_t oc, const auto& visit) {
    for (int64_t col = 0; col < taps; ++col) visit(col, weight[oc * taps + col]);
  });
}

}  // namespace ref
}  // namespace pyfastcnn
