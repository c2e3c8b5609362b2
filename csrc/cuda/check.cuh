// Every CUDA call and launch is checked; errors become std::runtime_error (RuntimeError).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#define PYFASTCNN_CUDA_CHECK(expr)                                                       \
  do {                                                                                   \
    const cudaError_t err_ = (expr);                                                     \
    if (err_ != cudaSuccess) {                                                           \
      throw std::runtime_error(std::string("CUDA error in ") + #expr + ": " +           \
                               cudaGetErrorString(err_));                                \
    }                                                                                    \
  } while (0)

// After every <<<...>>>: a bad configuration shows up here, not at the next unrelated call.
#define PYFASTCNN_CUDA_CHECK_LAUNCH() PYFASTCNN_CUDA_CHECK(cudaGetLastError())

// A host-side precondition of a launcher (the Python layer checks first; this is the backstop).
#define PYFASTCNN_CUDA_REQUIRE(cond, msg)                                                \
  do {                                                                                   \
    if (!(cond)) throw std::invalid_argument(std::string("pyfastcnn._cuda: ") + (msg));  \
  } while (0)

namespace pyfastcnn {
namespace cuda {

// This module links its own (static) CUDA runtime, which does not see torch's current device:
// every entry point makes the tensors' device current for the duration of the call.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    PYFASTCNN_CUDA_CHECK(cudaGetDevice(&previous_));
    if (device != previous_) PYFASTCNN_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceScope() {
    int now = -1;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

inline cudaStream_t as_stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

template <typename T>
inline T* as_ptr(uintptr_t p) { return reinterpret_cast<T*>(p); }

// Multiprocessor count of the current device (grid sizing), cached per device.
int sm_count();

}  // namespace cuda
}  // namespace pyfastcnn
