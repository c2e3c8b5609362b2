// Helpers shared by the INT8 kernels of every ISA (output kinds, conv-row repacking). Templates and constexpr only,
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

// Int8RepackConvRowsFn (kernels.h): the row of the C-padded packed weight (K = KH * KW * c4)
// that row k of the compact layout (segments of Lq rows covering `stack` kernel rows) holds, or
// -1 where row k is zero (past KW * stack * C in its segment, or past KH).
inline int64_t conv_rows_source(int64_t k, int64_t KH, int64_t KW, int64_t C, int64_t stack,
                                int64_t Lq) {
  const int64_t c4 = (C + 3) / 4 * 4, pixel = stack * C;
  const int64_t r = k % Lq, kh = k / Lq * stack + r % pixel / C;
  if (r >= KW * pixel || kh >= KH) return -1;
  return (kh * KW + r / pixel) * c4 + r % C;
}

}  // namespace
}  // namespace pyfastcnn
