// Scalar sparse INT8 convolution: the ground truth for the vector kernels. Reads the NHWC input
// directly (no virtual planes), walks each output channel's blocks (or groups), sums in
// unsigned 32-bit arithmetic (wrapping like the vector kernels) and finishes with the shared
// scalar epilogue.
#include <algorithm>
#include <cstring>
#include <vector>

#include "pyfastcnn/kernels.h"
#include "pyfastcnn/parallel.h"

namespace pyfastcnn {
namespace ref {

namespace {

// Both layouts: weight i (< 4) of unit j (block or group) reads input channel c and tap t of
// the group, where_is(j, i) = c * taps + t (c >= C/groups: block padding, reads zero_point).
template <class WhereIs>
void sparse_int8_reference(const uint8_t* x, uint8_t flip, uint8_t zero_point,
                           const Conv2dGeometry& g, const int64_t* row_ptr,
                           const int32_t* values32, const Int8Epilogue& epi, void* out,
                           const WhereIs& where_is) {
  const int64_t cg = g.C / g.groups, ocg = g.OC / g.groups, taps = g.KH * g.KW;
  const int64_t elem = epi.kind == Int8OutKind::i32 || epi.kind == Int8OutKind::f32 ? 4 : 1;
  parallel_for(g.N * g.OH * g.OW, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> acc(g.OC);
    for (int64_t m = begin; m < end; ++m) {
      const int64_t n = m / (g.OH * g.OW), oh = m / g.OW % g.OH, ow = m % g.OW;
      for (int64_t oc = 0; oc < g.OC; ++oc) {
        const int64_t grp = oc / ocg;
        uint32_t sum = 0;
        for (int64_t j = row_ptr[oc]; j < row_ptr[oc + 1]; ++j) {
          int8_t w[4];
          std::memcpy(w, values32 + j, 4);
          for (int i = 0; i < 4; ++i) {
            const int64_t k = where_is(j, i), c = k / taps, t = k % taps;
            const int64_t ih = oh * g.stride_h - g.pad_top + (t / g.KW) * g.dil_h;
            const int64_t iw = ow * g.stride_w - g.pad_left + (t % g.KW) * g.dil_w;
            const bool inside = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W && c < cg;
            const uint32_t xv =
                inside ? static_cast<uint8_t>(
                             x[((n * g.H + ih) * g.W + iw) * g.C + grp * cg + c] ^ flip)
                       : zero_point;
            sum += xv * static_cast<uint32_t>(static_cast<int32_t>(w[i]));
          }
        }
        acc[oc] = sum;
      }
      int8_epilogue_row(reinterpret_cast<const int32_t*>(acc.data()), 0, g.OC, epi,
                        static_cast<char*>(out) + m * g.OC * elem, m);
    }
  });
}

}  // namespace

void sparse_int8_conv2d(const uint8_t* x, uint8_t flip, uint8_t zero_point,
                        const Conv2dGeometry& g, const int64_t* row_ptr, const int32_t* block_k,
                        const int32_t* values32, const Int8Epilogue& epi, void* out) {
  const int64_t taps = g.KH * g.KW;
  sparse_int8_reference(x, flip, zero_point, g, row_ptr, values32, epi, out,
                        [&](int64_t j, int i) {  // channel 4 * c4 + i at the block's tap
                          return (4 * (block_k[j] / taps) + i) * taps + block_k[j] % taps;
                        });
}

void sparse_int8_group_conv2d(const uint8_t* x, uint8_t flip, uint8_t zero_point,
                              const Conv2dGeometry& g, const int64_t* row_ptr,
                              const int32_t* weight_k, const int32_t* values32,
                              const Int8Epilogue& epi, void* out) {
  sparse_int8_reference(x, flip, zero_point, g, row_ptr, values32, epi, out,
                        [&](int64_t j, int i) { return int64_t{weight_k[4 * j + i]}; });
}

// Each source pixel's channel quads go to consecutive 4-byte slots of their planes.
void sparse_int8_fill_planes(const SparseInt8ConvArgs& a) {
  const Conv2dGeometry& g = a.g;
  const int64_t sh = g.stride_h, sw = g.stride_w, cg = g.C / g.groups, cq = (cg + 3) / 4;
  const uint8_t flip = a.flip, zp = a.zero_point;
  const uint32_t flip4 = 0x01010101u * flip, zp4 = 0x01010101u * zp;
  parallel_for(g.N * sh * sw * a.Hq, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r % a.Hq, phase = r / a.Hq % (sh * sw), n = r / a.Hq / (sh * sw);
      const int64_t ph = phase / sw, pw = phase % sw, ih = i * sh + ph - g.pad_top;
      uint8_t* base = a.planes + n * a.image_bytes + phase * a.plane_pixels * 4 + i * a.Wq * 4;
      for (int64_t gq = 0; gq < g.groups * cq; ++gq) {
        uint8_t* out = base + (gq / cq) * a.group_bytes + (gq % cq) * a.quad_bytes;
        const int64_t c0 = (gq / cq) * cg + (gq % cq) * 4;
        const int64_t valid = std::min<int64_t>(4, (gq / cq + 1) * cg - c0);
        for (int64_t j = 0; j < a.Wq; ++j) {
          const int64_t iw = j * sw + pw - g.pad_left;
          uint32_t v = zp4;
          if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) {
            const uint8_t* in = a.x + ((n * g.H + ih) * g.W + iw) * g.C + c0;
            if (valid == 4) {
              std::memcpy(&v, in, 4);
              v ^= flip4;
            } else {
              uint8_t b[4] = {zp, zp, zp, zp};
              for (int64_t c = 0; c < valid; ++c) b[c] = in[c] ^ flip;
              std::memcpy(&v, b, 4);
            }
          }
          std::memcpy(out + 4 * j, &v, 4);
        }
      }
    }
  });
}

}  // namespace ref
}  // namespace pyfastcnn
