#include "check.cuh"
#include "pyfastcnn/cuda_ops.h"

namespace pyfastcnn {
namespace cuda {

std::vector<std::string> device_names() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver / no device: not an error for a device listing
    return {};
  }
  std::vector<std::string> names;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    PYFASTCNN_CUDA_CHECK(cudaGetDeviceProperties(&prop, i));
    names.push_back(std::string(prop.name) + " (sm_" + std::to_string(prop.major) +
                    std::to_string(prop.minor) + ")");
  }
  return names;
}

int runtime_version() {
  int version = 0;
  PYFASTCNN_CUDA_CHECK(cudaRuntimeGetVersion(&version));
  return version;
}

int sm_count() {
  constexpr int kMaxDevices = 64;
  static int cached[kMaxDevices] = {};
  int device = 0;
  PYFASTCNN_CUDA_CHECK(cudaGetDevice(&device));
  if (device < kMaxDevices && cached[device] > 0) return cached[device];
  int count = 0;
  PYFASTCNN_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  if (device < kMaxDevices) cached[device] = count;
  return count;
}

}  // namespace cuda
}  // namespace pyfastcnn
