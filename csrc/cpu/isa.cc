#include "pyfastcnn/isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define PYFASTCNN_HAVE_CPUID 1
#endif
#if defined(__linux__) && defined(PYFASTCNN_HAVE_CPUID)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace pyfastcnn {
namespace {

const char* const kNames[kNumIsas] = {"scalar",      "avx2",        "avx512",
                                     "avx512_vnni", "avx512_bf16", "avx512_amx"};

#ifdef PYFASTCNN_HAVE_CPUID
// XCR0: which register states the OS saves. A CPU flag is useless if the OS does not save the
// registers it uses (the AVX-512 state in particular can be disabled by the OS or hypervisor).
uint64_t read_xcr0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

// AMX tile data is a large register state that Linux (5.16+) only lets a process use after it
// asks once (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA); a tile instruction without that
// permission kills the process. The permission covers every thread of the process.
bool amx_permitted() {
#if defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

Isa detect() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return Isa::scalar;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12),
             f16c = c & (1u << 29);
  if (!(osxsave && avx && fma && f16c)) return Isa::scalar;
  const uint64_t xcr0 = read_xcr0();
  if ((xcr0 & 0x6) != 0x6) return Isa::scalar;  // SSE + AVX state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return Isa::scalar;
  if (!(b & (1u << 5))) return Isa::scalar;  // AVX2
  const bool avx512 = (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) &&
                      (b & (1u << 31)) && (xcr0 & 0xE0) == 0xE0;  // F DQ BW VL + zmm state
  if (!avx512) return Isa::avx2;
  if (!(c & (1u << 11))) return Isa::avx512;  // AVX512_VNNI
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) {  // AVX512_BF16
    return Isa::avx512_vnni;
  }
  // AMX-TILE (EDX bit 24), AMX-INT8 (25), AMX-BF16 (22); XCR0 bits 17-18: tile state.
  __get_cpuid_count(7, 0, &a, &b, &c, &d);
  const bool amx = (d & (1u << 24)) && (d & (1u << 25)) && (d & (1u << 22)) &&
                   (xcr0 & 0x60000) == 0x60000;
  if (!amx || !amx_permitted()) return Isa::avx512_bf16;
  return Isa::avx512_amx;
}
#else
Isa detect() { return Isa::scalar; }
#endif

std::atomic<int>& selected() {
  static std::atomic<int> value{static_cast<int>(detected_isa())};
  return value;
}

}  // namespace

const char* isa_name(Isa isa) { return kNames[static_cast<int>(isa)]; }

bool parse_isa(const char* name, Isa* out) {
  for (int i = 0; i < kNumIsas; ++i) {
    if (std::strcmp(name, kNames[i]) == 0) {
      *out = static_cast<Isa>(i);
      return true;
    }
  }
  return false;
}

// PYFASTCNN_SIMULATE_CPU=<level> caps detection, to test fallbacks and refusals as if on an
// older CPU. It can only lower the level, never claim instructions the CPU lacks.
static Isa detect_with_cap() {
  const Isa isa = detect();
  Isa cap;
  const char* env = std::getenv("PYFASTCNN_SIMULATE_CPU");
  if (env && *env && parse_isa(env, &cap) && static_cast<int>(cap) < static_cast<int>(isa)) {
    return cap;
  }
  return isa;
}

Isa detected_isa() {
  static const Isa isa = detect_with_cap();
  return isa;
}

Isa selected_isa() { return static_cast<Isa>(selected().load(std::memory_order_relaxed)); }

void set_isa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) {
    throw std::invalid_argument(std::string("ISA '") + isa_name(isa) +
                                "' is not supported by this CPU (best available: '" +
                                isa_name(detected_isa()) + "')");
  }
  selected().store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace pyfastcnn
