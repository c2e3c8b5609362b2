// Host-side entry point of the fused conv + bias + clamp (BN folded, ReLU/ReLU6) CUDA kernels.
// No CUDA headers: the bindings include this with the host compiler. Pointers are device
// pointers, `stream` is a cudaStream_t passed as an integer.
#pragma once
#include <cstdint>
#include <string>

namespace pyfastcnn {
namespace cuda {

// y = clamp(conv2d(x, w) + bias, clamp_min, clamp_max) on `stream` of `device`.
//   x: [N, H, W, C] (NHWC, dense), w: [OC, KH, KW, C/groups] (dense), bias: float32 [OC] or 0,
//   y: [N, OH, OW, OC] (NHWC, dense), all of one dtype: 0 float32, 2 float16, 3 bfloat16 (the
//   codes of pyfastcnn._native). pad_h/pad_w are the top/left padding; bottom/right padding is
//   whatever OH/OW imply (taps outside the input read zeros).
//   algo: "auto", "direct" (one thread per output, any geometry), "implicit_gemm" (tensor cores
//   for float16/bfloat16, which need C/groups % 8 == 0 and 16-byte aligned x and w; a tiled
//   SIMT kernel for float32). "auto": tensor cores where they apply; else the SIMT tiles
//   (FP32 FMAs, any dtype) when a group has >= 16 output channels; else direct.
//   Returns the kernel that ran: "direct", "tc_128x128", "tc_128x64" or "simt_128x64".
std::string conv2d_bias_act(int device, uintptr_t x, uintptr_t w, uintptr_t bias, uintptr_t y,
                            int dtype, int n, int h, int w_in, int c, int oc, int kh, int kw,
                            int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h,
                            int dilation_w, int groups, int oh, int ow, float clamp_min,
                            float clamp_max, uintptr_t stream, const std::string& algo);

}  // namespace cuda
}  // namespace pyfastcnn
