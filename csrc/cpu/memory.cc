#include "pyfastcnn/memory.h"

#include <cstdlib>
#include <new>
#include <utility>

namespace pyfastcnn {

AlignedBuffer::AlignedBuffer(size_t bytes) {
  if (bytes == 0) return;
  const size_t rounded = (bytes + 63) / 64 * 64;
  data_ = std::aligned_alloc(64, rounded);
  if (!data_) throw std::bad_alloc();
  size_ = bytes;
}

AlignedBuffer::~AlignedBuffer() { std::free(data_); }

AlignedBuffer::AlignedBuffer(AlignedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& other) noexcept {
  if (this != &other) {
    std::free(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void* AlignedBuffer::data() const { return data_; }

void* scratch(ScratchSlot slot, size_t bytes) {
  thread_local AlignedBuffer buffers[kNumScratchSlots];
  AlignedBuffer& buffer = buffers[static_cast<int>(slot)];
  if (buffer.size() < bytes) buffer = AlignedBuffer(bytes + bytes / 4);  // headroom
  return buffer.data();
}
size_t AlignedBuffer::size() const { return size_; }

}  // namespace pyfastcnn
