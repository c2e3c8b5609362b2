#pragma once
#include <cstdint>

namespace pyfastcnn {
namespace cuda {

__global__ void scale_f32_kernel(float* __restrict__ data, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    data[i] *= alpha;
  }
}

}  // namespace cuda
}  // namespace pyfastcnn
