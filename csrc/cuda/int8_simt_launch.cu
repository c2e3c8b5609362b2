// Launchers of the CUDA-core INT8 kernels (fallback GEMM, direct conv).
#include <algorithm>
#include <climits>

#include "check.cuh"
#include "int8_ops.h"
#include "int8_simt_kernel.cuh"

namespace pyfastcnn {
namespace cuda {

void int8_gemm_strided(int device, uintptr_t stream, uintptr_t a, int64_t lda, bool a_signed,
                       uintptr_t b, int64_t b_stride_k, int64_t b_stride_n, int64_t M, int64_t N,
                       int64_t K, uintptr_t out, int64_t ldc, const EpilogueArgs& epi) {
  PYFASTCNN_CUDA_REQUIRE(M >= 0 && N >= 0 && K >= 0, "negative size");
  PYFASTCNN_CUDA_REQUIRE(M < INT_MAX && N < INT_MAX && K < INT_MAX, "size above 2^31 - 1");
  PYFASTCNN_CUDA_REQUIRE(lda >= K && ldc >= N, "leading dimensions too small");
  if (M == 0 || N == 0) return;
  PYFASTCNN_CUDA_REQUIRE(a != 0 && b != 0 && out != 0, "null pointer");
  DeviceScope scope(device);
  const int64_t tiles_m = (M + int8::kSimtTile - 1) / int8::kSimtTile;
  const int64_t tiles_n = (N + int8::kSimtTile - 1) / int8::kSimtTile;
  PYFASTCNN_CUDA_REQUIRE(tiles_m <= INT_MAX && tiles_n <= 65535, "problem too large");
  const dim3 grid(static_cast<unsigned>(tiles_m), static_cast<unsigned>(tiles_n));
  const int8::Epilogue e = int8::make_epilogue(epi);
  const cudaStream_t s = as_stream(stream);
  const auto* pa = as_ptr<const uint8_t>(a);
  const auto* pb = as_ptr<const int8_t>(b);
  if (a_signed) {
    int8::simt_gemm_kernel<true><<<grid, int8::kSimtThreads, 0, s>>>(
        pa, lda, pb, b_stride_k, b_stride_n, int(M), int(N), int(K), as_ptr<void>(out), ldc, e);
  } else {
    int8::simt_gemm_kernel<false><<<grid, int8::kSimtThreads, 0, s>>>(
        pa, lda, pb, b_stride_k, b_stride_n, int(M), int(N), int(K), as_ptr<void>(out), ldc, e);
  }
  PYFASTCNN_CUDA_CHECK_LAUNCH();
}

void int8_conv2d_direct(int device, uintptr_t stream, uintptr_t x, bool x_signed, int64_t batch,
                        int64_t Hp, int64_t Wp, uintptr_t weight, int64_t KH, int64_t KW,
                        int64_t cg, int64_t groups, int64_t ocg, int64_t stride_h,
                        int64_t stride_w, int64_t dil_h, int64_t dil_w, int64_t OH, int64_t OW,
                        uintptr_t out, const EpilogueArgs& epi) {
  PYFASTCNN_CUDA_REQUIRE(batch >= 0 && OH >= 1 && OW >= 1 && KH >= 1 && KW >= 1 && cg >= 1 &&
                             groups >= 1 && ocg >= 1,
                         "bad conv geometry");
  PYFASTCNN_CUDA_REQUIRE(stride_h >= 1 && stride_w >= 1 && dil_h >= 1 && dil_w >= 1,
                         "stride and dilation must be positive");
  PYFASTCNN_CUDA_REQUIRE((OH - 1) * stride_h + (KH - 1) * dil_h < Hp &&
                             (OW - 1) * stride_w + (KW - 1) * dil_w < Wp,
                         "the source image is not padded for every tap of every output pixel");
  PYFASTCNN_CUDA_REQUIRE(Hp < INT_MAX && Wp < INT_MAX && groups * cg < INT_MAX &&
                             groups * ocg < INT_MAX && KH * KW * cg < INT_MAX,
                         "conv too large");
  const int64_t total = batch * OH * OW * groups * ocg;
  if (total == 0) return;
  DeviceScope scope(device);
  int8::DirectConvParams p{};
  p.x = as_ptr<const uint8_t>(x);
  p.Hp = int(Hp);
  p.Wp = int(Wp);
  p.C = int(groups * cg);
  p.w = as_ptr<const int8_t>(weight);
  p.KH = int(KH);
  p.KW = int(KW);
  p.cg = int(cg);
  p.ocg = int(ocg);
  p.OC = int(groups * ocg);
  p.stride_h = int(stride_h);
  p.stride_w = int(stride_w);
  p.dil_h = int(dil_h);
  p.dil_w = int(dil_w);
  p.OH = int(OH);
  p.OW = int(OW);
  p.total = total;
  p.out = as_ptr<void>(out);
  p.epi = int8::make_epilogue(epi);
  const int64_t blocks =
      std::min<int64_t>((total + int8::kSimtThreads - 1) / int8::kSimtThreads, 32LL * sm_count());
  const cudaStream_t s = as_stream(stream);
  if (x_signed) {
    int8::direct_conv_kernel<true><<<unsigned(blocks), int8::kSimtThreads, 0, s>>>(p);
  } else {
    int8::direct_conv_kernel<false><<<unsigned(blocks), int8::kSimtThreads, 0, s>>>(p);
  }
  PYFASTCNN_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace pyfastcnn
