#include "pyfastcnn/tensor_ref.h"

#include <stdexcept>

namespace pyfastcnn {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::i8: return "int8";
    case DType::u8: return "uint8";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
  }
  return "unknown";
}

int dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f64: case DType::i64: return 8;
    case DType::f32: case DType::i32: return 4;
    case DType::f16: case DType::bf16: return 2;
    case DType::i8: case DType::u8: return 1;
  }
  return 0;
}

int64_t TensorRef::numel() const {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= sizes[d];
  return n;
}

bool TensorRef::is_contiguous() const {
  int64_t expected = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    if (sizes[d] != 1 && strides[d] != expected) return false;
    expected *= sizes[d];
  }
  return true;
}

void fail(const std::string& message) { throw std::invalid_argument(message); }

void check_tensor(const TensorRef& t, const char* name, DType dtype, int ndim) {
  if (t.dtype != dtype) {
    fail(std::string(name) + " must be " + dtype_name(dtype) + ", got " + dtype_name(t.dtype));
  }
  if (t.ndim != ndim) {
    fail(std::string(name) + " must have " + std::to_string(ndim) + " dimensions, got " +
         std::to_string(t.ndim));
  }
  for (int d = 0; d < t.ndim; ++d) {
    if (t.sizes[d] < 0 || t.strides[d] < 0) {
      fail(std::string(name) + " has a negative size or stride");
    }
  }
  if (t.data == nullptr && t.numel() > 0) fail(std::string(name) + " has no data");
}

void check_contiguous(const TensorRef& t, const char* name) {
  if (!t.is_contiguous()) fail(std::string(name) + " must be contiguous");
}

}  // namespace pyfastcnn
