// Launcher of the Hopper wgmma INT8 kernel and the probe that says whether it can run.
#include <climits>
#include <mutex>

#include "check.cuh"
#include "int8_launch.cuh"
#include "int8_wgmma_kernel.cuh"

namespace pyfastcnn {
namespace cuda {
namespace int8 {

namespace {

template <int BN, bool kSignedA>
void launch_tile(IgemmParams p, int groups, cudaStream_t stream) {
  using Tile = WgTile<BN>;
  p.tiles_m = static_cast<int>((p.M + kWgBM - 1) / kWgBM);
  p.tiles_n = static_cast<int>((p.N + BN - 1) / BN);
  auto kernel = wgmma_kernel<BN, kSignedA>;
  PYFASTCNN_CUDA_CHECK(cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSmemBytes));
  const int64_t tiles = static_cast<int64_t>(p.tiles_m) * p.tiles_n;
  PYFASTCNN_CUDA_REQUIRE(tiles <= INT_MAX && groups <= 65535, "problem too large for one launch");
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(groups));
  kernel<<<grid, kWgThreads, Tile::kSmemBytes, stream>>>(p);
  PYFASTCNN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_wgmma(IgemmParams p, bool a_signed, int groups, cudaStream_t stream) {
  // 128 x 256 tiles unless they leave SMs idle or N is small, then 128 x 128.
  const int64_t wide = ((p.M + kWgBM - 1) / kWgBM) * int64_t((p.N + 255) / 256) * groups;
  const bool use_wide = p.N > 128 && wide >= sm_count();
  if (use_wide) {
    a_signed ? launch_tile<256, true>(p, groups, stream) : launch_tile<256, false>(p, groups, stream);
  } else {
    a_signed ? launch_tile<128, true>(p, groups, stream) : launch_tile<128, false>(p, groups, stream);
  }
}

bool wgmma_available() {
  constexpr int kMaxDevices = 64;
  static int cached[kMaxDevices] = {};  // 0 unknown, 1 no, 2 yes
  static std::mutex mutex;
  int device = 0;
  PYFASTCNN_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  if (device < kMaxDevices && cached[device]) return cached[device] == 2;
  int major = 0, minor = 0;
  PYFASTCNN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  PYFASTCNN_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  bool yes = false;
  if (major == 9 && minor == 0) {
    int* flag = nullptr;
    PYFASTCNN_CUDA_CHECK(cudaMalloc(&flag, sizeof(int)));
    int host = 0;
    wgmma_probe_kernel<<<1, 1>>>(flag);
    cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess) err = cudaMemcpy(&host, flag, sizeof(int), cudaMemcpyDeviceToHost);
    cudaFree(flag);
    PYFASTCNN_CUDA_CHECK(err);
    yes = host == 1;
  }
  if (device < kMaxDevices) cached[device] = yes ? 2 : 1;
  return yes;
}

}  // namespace int8

bool int8_wgmma_available(int device) {
  DeviceScope scope(device);
  return int8::wgmma_available();
}

}  // namespace cuda
}  // namespace pyfastcnn
