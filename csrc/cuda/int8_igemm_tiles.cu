// The 128 x 128, 128 x 64 and 64 x 64 mma.sync kernels.
#include "int8_igemm_tile.cuh"

namespace pyfastcnn {
namespace cuda {
namespace int8 {

template void launch_igemm_tile<4, 4, true>(IgemmParams, int, cudaStream_t);
template void launch_igemm_tile<4, 4, false>(IgemmParams, int, cudaStream_t);
template void launch_igemm_tile<4, 2, true>(IgemmParams, int, cudaStream_t);
template void launch_igemm_tile<4, 2, false>(IgemmParams, int, cudaStream_t);
template void launch_igemm_tile<2, 2, true>(IgemmParams, int, cudaStream_t);
template void launch_igemm_tile<2, 2, false>(IgemmParams, int, cudaStream_t);

}  // namespace int8
}  // namespace cuda
}  // namespace pyfastcnn
