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

// Scratch memory reused across calls by the calling thread, one buffer per `slot` (callers
// that need two buffers at once use two slots). Fresh large allocations are mmap'd and
// page-faulted on every call, which costs as much as the work for a batch-1 layer. Valid
// until the same thread asks for the same slot again; grows, never shrinks.
enum class ScratchSlot : int {
  activations = 0,
  conv_source = 1,
  columns = 2,
  int32_sums = 3,
  weights = 4,
  packed_weights = 5,
  output = 6,
  widened = 7,  // the AVX2 INT8 kernels' uint16 copies of their byte operands
};
constexpr int kNumScratchSlots = 8;
void* scratch(ScratchSlot slot, size_t bytes);

}  // namespace pyfastcnn
