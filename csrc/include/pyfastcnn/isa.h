// CPU instruction-set levels, detected once; a lower level can be forced (PYFASTCNN_ISA).
#pragma once

namespace pyfastcnn {

// Ordered: each level includes everything below it.
// avx512_amx: AVX-512 BF16 plus AMX tiles (AMX-TILE, AMX-INT8, AMX-BF16), with the OS's permission.
enum class Isa : int {
  scalar = 0,
  avx2 = 1,
  avx512 = 2,
  avx512_vnni = 3,
  avx512_bf16 = 4,
  avx512_amx = 5
};
constexpr int kNumIsas = 6;

const char* isa_name(Isa isa);
bool parse_isa(const char* name, Isa* out);
Isa detected_isa();  // best level this CPU and OS support
Isa selected_isa();  // level the kernels use
// Refuses (std::invalid_argument) a level above detected_isa().
void set_isa(Isa isa);

}  // namespace pyfastcnn
