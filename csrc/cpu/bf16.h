// float -> bfloat16, round to nearest even; NaN stays NaN. Internal linkage: each unit (ISA or
// not) gets its own copy, so no shared inline code crosses ISA flags.
#pragma once
#include <cstdint>
#include <cstring>

namespace pyfastcnn {
namespace {

[[maybe_unused]] uint16_t to_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace
}  // namespace pyfastcnn
