// Launch helpers shared by the INT8 launchers (nvcc only).
#pragma once
#include <cuda_runtime.h>

#include "int8_igemm_kernel.cuh"

namespace pyfastcnn {
namespace cuda {
namespace int8 {

// The mma.sync kernel with MT x NT warp tiles (CTA tile 32 MT x 32 NT) for p, on `stream`.
// Defined in int8_igemm_tile.cuh and instantiated in int8_igemm_tiles*.cu, one translation
// unit per group of tile shapes so that builds compile them in parallel.
template <int MT, int NT, bool kSignedA>
void launch_igemm_tile(IgemmParams p, int groups, cudaStream_t stream);

// The wgmma kernel for p (tile 128 x 128 or 128 x 256), on the current device, which must
// satisfy wgmma_available(). int8_wgmma_launch.cu.
void launch_wgmma(IgemmParams p, bool a_signed, int groups, cudaStream_t stream);

// True when the current device runs this binary's sm_90a code (an H100/H200 and a build with
// 90a-real): asked once per device by running a probe kernel.
bool wgmma_available();

}  // namespace int8
}  // namespace cuda
}  // namespace pyfastcnn
