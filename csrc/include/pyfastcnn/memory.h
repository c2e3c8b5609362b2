// 64-byte aligned scratch memory. Members are defined out of line (memory.cc) so ISA units can
// use it without instantiating shared inline code under their flags.
#pragma once
#include <cstddef>

namespace pyfastcnn {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes);
  ~AlignedBuffer();
  AlignedBuffer(AlignedBuffer&& other) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  void* data() const;
  size_t size() const;

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace pyfastcnn
