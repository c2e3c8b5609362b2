// pyfastcnn's own thread pool: no OpenMP, so no second OpenMP runtime beside PyTorch's.
// Workers spin briefly after a job, then sleep; a call made while the pool is busy (another
// thread, or nested) runs inline instead of waiting, so nothing deadlocks or oversubscribes.
#pragma once
#include <cstdint>

namespace pyfastcnn {

int get_num_threads();
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
