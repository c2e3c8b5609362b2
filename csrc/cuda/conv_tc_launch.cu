// Tile choice and launch of the tensor-core implicit-GEMM conv (conv_tc_kernel.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "check.cuh"
#include "conv_common.cuh"
#include "conv_tc_kernel.cuh"

namespace pyfastcnn {
namespace cuda {
namespace conv {
namespace {

constexpr int kStages = 4;

template <typename T, int BN, int WARPS_M, int WARPS_N>
void launch_tile(const Params& p, cudaStream_t stream) {
  constexpr int smem = tc_smem_bytes<BN, kStages>();
  auto kernel = conv_tc_kernel<T, BN, WARPS_M, WARPS_N, kStages>;
  // Over 48 KiB of dynamic shared memory needs an opt-in, per device; once per device is enough.
  static bool opted_in[64] = {};
  int device = 0;
  PYFASTCNN_CUDA_CHECK(cudaGetDevice(&device));
  if (device >= 64 || !opted_in[device]) {
    PYFASTCNN_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    if (device < 64) opted_in[device] = true;
  }
  const dim3 grid((p.m + kTcBM - 1) / kTcBM, (p.ocg + BN - 1) / BN, p.groups);
  kernel<<<grid, WARPS_M * WARPS_N * 32, smem, stream>>>(p);
  PYFASTCNN_CUDA_CHECK_LAUNCH();
}

template <typename T>
const char* launch_tc(const Params& p, cudaStream_t stream) {
  // 128 x 128 tiles (8 warps) when the output channels fill them and there are enough tiles to
  // cover the GPU; else 128 x 64 (4 warps): twice the CTAs, less waste on 64-channel layers.
  const int64_t tiles128 = int64_t((p.m + kTcBM - 1) / kTcBM) * ((p.ocg + 127) / 128) * p.groups;
  if (p.ocg > 64 && tiles128 >= sm_count()) {
    launch_tile<T, 128, 2, 4>(p, stream);
    return "tc_128x128";
  }
  launch_tile<T, 64, 2, 2>(p, stream);
  return "tc_128x64";
}

}  // namespace

const char* launch_tc_f16(const Params& p, cudaStream_t stream) {
  return launch_tc<__half>(p, stream);
}
const char* launch_tc_bf16(const Params& p, cudaStream_t stream) {
  return launch_tc<__nv_bfloat16>(p, stream);
}

}  // namespace conv
}  // namespace cuda
}  // namespace pyfastcnn
