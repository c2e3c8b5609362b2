// A torch-free view of a tensor crossing the Python boundary: pointer, dtype, sizes, strides.
// Python builds it from a torch.Tensor; native code checks it before touching the memory.
#pragma once
#include <cstdint>
#include <string>

namespace pyfastcnn {

// Codes shared with pyfastcnn/_native.py (_DTYPE_CODES); keep the two in sync.
enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3, i8 = 4, u8 = 5, i32 = 6, i64 = 7 };
const char* dtype_name(DType dtype);
int dtype_size(DType dtype);

constexpr int kMaxDims = 6;

struct TensorRef {
  void* data = nullptr;
  DType dtype = DType::f32;
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};  // in elements, never negative

  int64_t numel() const;
  bool is_contiguous() const;  // row-major, dense
};

// Throws std::invalid_argument (ValueError in Python) naming the argument when the tensor has
// another dtype or rank, a null pointer with elements, or a negative stride.
void check_tensor(const TensorRef& t, const char* name, DType dtype, int ndim);
void check_contiguous(const TensorRef& t, const char* name);
[[noreturn]] void fail(const std::string& message);

}  // namespace pyfastcnn
