// Every CUDA call and launch is checked; errors become std::runtime_error (RuntimeError).
#pragma once
#include <cuda_runtime.h>

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
