// The 128 x 256 mma.sync kernels (the largest: their own translation unit).
#include "int8_igemm_tile.cuh"

namespace pyfastcnn {
namespace cuda {
namespace int8 {

template void launch_igemm_tile<4, 8, true>(IgemmParams, int, cudaStream_t);
template void launch_igemm_tile<4, 8, false>(IgemmParams, int, cudaStream_t);

}  // namespace int8
}  // namespace cuda
}  // namespace pyfastcnn
