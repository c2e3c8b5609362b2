// Host-side entry points of the CUDA module. No CUDA headers here: the bindings include this
// with the host compiler. Pointers are device pointers; `stream` is a cudaStream_t passed as an
// integer (the caller's current stream). Failures throw std::runtime_error with CUDA's message.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pyfastcnn {
namespace cuda {

std::vector<std::string> device_names();  // empty without a driver or a GPU
int runtime_version();

// data[i] *= alpha for i < n. A placeholder that proves the build, launch and stream path.
void scale_f32(uintptr_t data, int64_t n, float alpha, uintptr_t stream);

}  // namespace cuda
}  // namespace pyfastcnn
