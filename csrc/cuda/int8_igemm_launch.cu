// Launchers of the tensor-core INT8 kernels: tile choice, grid, dynamic shared memory, checks.
#include <climits>

#include "check.cuh"
#include "int8_launch.cuh"
#include "int8_ops.h"

namespace pyfastcnn {
namespace cuda {

namespace {

using int8::IgemmParams;

bool aligned16(uintptr_t p) { return (p & 15u) == 0; }

// The tile shape: the one with the least padded work (tiles x BM x BN), weighted by how much
// slower per useful MAC smaller tiles run (more shared-memory traffic per mma), among those
// that give at least one CTA per SM (64 x 64 always qualifies). The weights are estimates.
struct TileChoice {
  int bm, bn;
  double cost;  // relative cost per padded output element
};
constexpr TileChoice kTiles[] = {{128, 256, 1.0}, {128, 128, 1.08}, {128, 64, 1.2}, {64, 64, 1.45}};

template <bool kSignedA>
void launch(const IgemmParams& p, int groups, cudaStream_t stream) {
  const int sms = sm_count();
  int best = 3;
  double best_cost = 0;
  for (int i = 0; i < 4; ++i) {
    const int64_t tiles = ((p.M + kTiles[i].bm - 1) / kTiles[i].bm) *
                          int64_t((p.N + kTiles[i].bn - 1) / kTiles[i].bn) * groups;
    if (i < 3 && tiles < sms) continue;
    const double cost = double(tiles) * kTiles[i].bm * kTiles[i].bn * kTiles[i].cost;
    if (best_cost == 0 || cost < best_cost) {
      best = i;
      best_cost = cost;
    }
  }
  switch (best) {
    case 0: int8::launch_igemm_tile<4, 8, kSignedA>(p, groups, stream); break;
    case 1: int8::launch_igemm_tile<4, 4, kSignedA>(p, groups, stream); break;
    case 2: int8::launch_igemm_tile<4, 2, kSignedA>(p, groups, stream); break;
    default: int8::launch_igemm_tile<2, 2, kSignedA>(p, groups, stream); break;
  }
}

// Auto takes the wgmma kernel on Hopper once it has been verified there (flip this after
// tests/test_cuda_int8.py passes with path wgmma on an H100/H200).
constexpr bool kAutoWgmma = false;

void launch_igemm(const IgemmParams& p, bool a_signed, int groups, cudaStream_t stream,
                  int path) {
  PYFASTCNN_CUDA_REQUIRE(path >= 0 && path <= 3, "path must be 0..3 (Int8Path)");
  const bool want_wgmma = path == int(Int8Path::wgmma) ||
                          (path == int(Int8Path::automatic) && kAutoWgmma);
  if (want_wgmma) {
    if (int8::wgmma_available()) {
      int8::launch_wgmma(p, a_signed, groups, stream);
      return;
    }
    PYFASTCNN_CUDA_REQUIRE(path != int(Int8Path::wgmma),
                           "the wgmma kernel needs an sm_90 device and a build with sm_90a code");
  }
  if (a_signed) {
    launch<true>(p, groups, stream);
  } else {
    launch<false>(p, groups, stream);
  }
}

}  // namespace

void int8_gemm(int device, uintptr_t stream, uintptr_t a, int64_t lda, bool a_signed, uintptr_t b,
               int64_t ldb, int64_t M, int64_t N, int64_t K, uintptr_t out, int64_t ldc,
               const EpilogueArgs& epi, int path) {
  PYFASTCNN_CUDA_REQUIRE(M >= 0 && N >= 0 && K >= 0, "negative size");
  PYFASTCNN_CUDA_REQUIRE(M < INT_MAX && N < INT_MAX && K < INT_MAX, "size above 2^31 - 1");
  PYFASTCNN_CUDA_REQUIRE(lda >= K && ldb >= K && ldc >= N, "leading dimensions too small");
  if (M == 0 || N == 0) return;
  PYFASTCNN_CUDA_REQUIRE(a != 0 && b != 0 && out != 0, "null pointer");
  const bool tensor_cores = path != int(Int8Path::cuda_cores) && K > 0 && K % 16 == 0 &&
                            aligned16(a) && lda % 16 == 0 && aligned16(b) && ldb % 16 == 0;
  if (!tensor_cores) {
    int8_gemm_strided(device, stream, a, lda, a_signed, b, 1, ldb, M, N, K, out, ldc, epi);
    return;
  }
  DeviceScope scope(device);
  IgemmParams p{};
  p.a = as_ptr<const uint8_t>(a);
  p.ag = int8::AGeometry{1, 1, 1, static_cast<int>(K), lda, 0, 0, 0, 0, 0};
  p.M = static_cast<int>(M);
  p.K = static_cast<int>(K);
  p.b = as_ptr<const int8_t>(b);
  p.ldb = ldb;
  p.b_group_stride = 0;
  p.N = static_cast<int>(N);
  p.out = as_ptr<void>(out);
  p.ldc = ldc;
  p.epi = int8::make_epilogue(epi);
  launch_igemm(p, a_signed, 1, as_stream(stream), path);
}

void int8_conv2d_igemm(int device, uintptr_t stream, uintptr_t x, bool x_signed, int64_t batch,
                       int64_t Hp, int64_t Wp, int64_t Cp, uintptr_t weight, int64_t KH,
                       int64_t KW, int64_t cgp, int64_t groups, int64_t ocg, int64_t stride_h,
                       int64_t stride_w, int64_t dil_h, int64_t dil_w, int64_t OH, int64_t OW,
                       uintptr_t out, const EpilogueArgs& epi, int path) {
  PYFASTCNN_CUDA_REQUIRE(path != int(Int8Path::cuda_cores), "the conv has no CUDA-core GEMM path");
  PYFASTCNN_CUDA_REQUIRE(batch >= 0 && OH >= 1 && OW >= 1 && KH >= 1 && KW >= 1,
                         "bad conv geometry");
  PYFASTCNN_CUDA_REQUIRE(groups >= 1 && ocg >= 1 && cgp >= 16 && cgp % 16 == 0 &&
                             Cp == groups * cgp,
                         "channels per group must be padded to a multiple of 16, Cp = groups * cgp");
  PYFASTCNN_CUDA_REQUIRE(stride_h >= 1 && stride_w >= 1 && dil_h >= 1 && dil_w >= 1,
                         "stride and dilation must be positive");
  PYFASTCNN_CUDA_REQUIRE((OH - 1) * stride_h + (KH - 1) * dil_h < Hp &&
                             (OW - 1) * stride_w + (KW - 1) * dil_w < Wp,
                         "the source image is not padded for every tap of every output pixel");
  const int64_t M = batch * OH * OW, K = KH * KW * cgp;
  PYFASTCNN_CUDA_REQUIRE(M < INT_MAX && K < INT_MAX && ocg < INT_MAX, "conv too large");
  if (M == 0) return;
  PYFASTCNN_CUDA_REQUIRE(aligned16(x) && aligned16(weight), "x and weight must be 16-byte aligned");
  DeviceScope scope(device);
  IgemmParams p{};
  p.a = as_ptr<const uint8_t>(x);
  p.ag = int8::AGeometry{static_cast<int>(OH), static_cast<int>(OW), static_cast<int>(KW),
                         static_cast<int>(cgp),  Hp * Wp * Cp,          stride_h * Wp * Cp,
                         stride_w * Cp,          dil_h * Wp * Cp,       dil_w * Cp,
                         cgp};
  p.M = static_cast<int>(M);
  p.K = static_cast<int>(K);
  p.b = as_ptr<const int8_t>(weight);
  p.ldb = K;
  p.b_group_stride = ocg * K;
  p.N = static_cast<int>(ocg);
  p.out = as_ptr<void>(out);
  p.ldc = groups * ocg;
  p.epi = int8::make_epilogue(epi);
  launch_igemm(p, x_signed, static_cast<int>(groups), as_stream(stream), path);
}

}  // namespace cuda
}  // namespace pyfastcnn
