// Definition of launch_igemm_tile (int8_launch.cuh), included only by the int8_igemm_tiles*.cu
// files that instantiate it.
#pragma once
#include <climits>

#include "check.cuh"
#include "int8_launch.cuh"

namespace pyfastcnn {
namespace cuda {
namespace int8 {

template <int MT, int NT, bool kSignedA>
void launch_igemm_tile(IgemmParams p, int groups, cudaStream_t stream) {
  using Tile = IgemmTile<MT, NT>;
  p.tiles_m = static_cast<int>((p.M + Tile::BM - 1) / Tile::BM);
  p.tiles_n = static_cast<int>((p.N + Tile::BN - 1) / Tile::BN);
  auto kernel = igemm_kernel<MT, NT, kSignedA>;
  // Above 48 KB a kernel must opt in to dynamic shared memory (per device, cheap to repeat).
  PYFASTCNN_CUDA_CHECK(cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSmemBytes));
  const int64_t tiles = static_cast<int64_t>(p.tiles_m) * p.tiles_n;
  PYFASTCNN_CUDA_REQUIRE(tiles <= INT_MAX && groups <= 65535, "problem too large for one launch");
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(groups));
  kernel<<<grid, kIgemmThreads, Tile::kSmemBytes, stream>>>(p);
  PYFASTCNN_CUDA_CHECK_LAUNCH();
}

}  // namespace int8
}  // namespace cuda
}  // namespace pyfastcnn
