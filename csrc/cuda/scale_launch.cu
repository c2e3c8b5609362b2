#include <algorithm>

#include "check.cuh"
#include "pyfastcnn/cuda_ops.h"
#include "scale_kernel.cuh"

namespace pyfastcnn {
namespace cuda {

void scale_f32(uintptr_t data, int64_t n, float alpha, uintptr_t stream) {
  if (n <= 0) return;
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 65535);
  scale_f32_kernel<<<static_cast<unsigned>(blocks), kThreads, 0,
                     reinterpret_cast<cudaStream_t>(stream)>>>(reinterpret_cast<float*>(data), n,
                                                                alpha);
  PYFASTCNN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace cuda
}  // namespace pyfastcnn
