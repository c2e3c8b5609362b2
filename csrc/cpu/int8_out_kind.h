// Helpers on Int8OutKind shared by the INT8 kernels of every ISA. Templates and constexpr only,
// in an anonymous namespace: each ISA unit instantiates them with its own lambdas and flags.
#pragma once
#include <cstdint>
#include <type_traits>

#include "pyfastcnn/kernels.h"

namespace pyfastcnn {
namespace {

// Calls fn(std::integral_constant<Int8OutKind, kind>{}): a kernel's entry point instantiates its
// templates per output kind once, here, instead of a switch of its own.
template <class Fn>
void with_out_kind(Int8OutKind kind, const Fn& fn) {
  switch (kind) {
    case Int8OutKind::i32: return fn(std::integral_constant<Int8OutKind, Int8OutKind::i32>{});
    case Int8OutKind::f32: return fn(std::integral_constant<Int8OutKind, Int8OutKind::f32>{});
    case Int8OutKind::s8: return fn(std::integral_constant<Int8OutKind, Int8OutKind::s8>{});
    case Int8OutKind::u8: return fn(std::integral_constant<Int8OutKind, Int8OutKind::u8>{});
  }
}

constexpr int64_t out_bytes(Int8OutKind kind) {
  return kind == Int8OutKind::i32 || kind == Int8OutKind::f32 ? 4 : 1;
}

}  // namespace
}  // namespace pyfastcnn
