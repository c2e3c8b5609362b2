// Parallel loops. They run on the process's GNU OpenMP runtime when one is loaded (PyTorch's:
// sharing its threads instead of competing with them, see parallel.cc), else on pyfastcnn's own
// pool, whose workers spin briefly after a job and then sleep. A call made while a job is in
// flight (another thread, or nested) runs inline instead of waiting: nothing deadlocks or
// oversubscribes.
#pragma once
#include <cstdint>
#include <string>

namespace pyfastcnn {

int get_num_threads();
// "openmp (<library>)" or "own pool".
std::string threading_backend();
void set_num_threads(int n);  // n >= 1

using RangeFn = void (*)(void* ctx, int64_t begin, int64_t end);

// Calls fn(ctx, b, e) over disjoint chunks covering [0, n), chunks of about `grain` items handed
// out dynamically (uneven work such as sparse rows balances itself).
void parallel_for(int64_t n, int64_t grain, RangeFn fn, void* ctx);

// Lambda form. The template is instantiated per lambda type, so it is safe in ISA units.
template <class F>
void parallel_for(int64_t n, int64_t grain, const F& f) {
  parallel_for(
      n, grain, [](void* ctx, int64_t b, int64_t e) { (*static_cast<const F*>(ctx))(b, e); },
      const_cast<void*>(static_cast<const void*>(&f)));
}

}  // namespace pyfastcnn
