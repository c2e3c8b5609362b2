#include "pyfastcnn/parallel.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define PYFASTCNN_PAUSE() _mm_pause()
#else
#define PYFASTCNN_PAUSE() std::this_thread::yield()
#endif

namespace pyfastcnn {
namespace {

// How long an idle worker polls for the next job before sleeping: long enough to catch the
// next layer of a network (tens of microseconds), short enough not to steal a core from PyTorch.
constexpr int kSpinIterations = 4000;

thread_local bool t_inside_job = false;

int default_num_threads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

class Pool {
 public:
  explicit Pool(int threads) {
    workers_.reserve(threads - 1);
    for (int i = 0; i + 1 < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(wake_mutex_);
      stop_.store(true);
    }
    wake_cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // False when another job holds the pool: the caller then runs the work inline.
  bool try_run(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
    std::unique_lock<std::mutex> job(job_mutex_, std::try_to_lock);
    if (!job.owns_lock()) return false;
    fn_ = fn;
    ctx_ = ctx;
    n_ = n;
    chunk_ = std::max<int64_t>(grain, 1);
    num_chunks_ = (n + chunk_ - 1) / chunk_;
    next_chunk_.store(0, std::memory_order_relaxed);
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(wake_mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_cv_.notify_all();
    work();
    while (pending_.load(std::memory_order_acquire) != 0) PYFASTCNN_PAUSE();
    return true;
  }

 private:
  void work() {
    t_inside_job = true;
    for (;;) {
      const int64_t c = next_chunk_.fetch_add(1, std::memory_order_relaxed);
      if (c >= num_chunks_) break;
      const int64_t begin = c * chunk_;
      fn_(ctx_, begin, std::min(n_, begin + chunk_));
    }
    t_inside_job = false;
  }

  void worker_loop() {
    uint64_t seen = 0;  // the generation at construction: a job posted before this thread ran still counts
    for (;;) {
      int spins = 0;
      while (generation_.load(std::memory_order_acquire) == seen && !stop_.load() &&
             spins < kSpinIterations) {
        PYFASTCNN_PAUSE();
        ++spins;
      }
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(wake_mutex_);
        wake_cv_.wait(lock, [&] {
          return stop_.load() || generation_.load(std::memory_order_acquire) != seen;
        });
      }
      if (stop_.load()) return;
      seen = generation_.load(std::memory_order_acquire);
      work();
      pending_.fetch_sub(1, std::memory_order_release);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex job_mutex_;
  std::mutex wake_mutex_;
  std::condition_variable wake_cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> pending_{0};
  std::atomic<int64_t> next_chunk_{0};
  RangeFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0, chunk_ = 1, num_chunks_ = 0;
};

std::mutex g_mutex;
int g_num_threads = 0;  // 0: not yet decided
std::shared_ptr<Pool> g_pool;

// A forked child has none of the parent's worker threads. Its copy of the pool is leaked on
// purpose (destroying it would join threads that do not exist) and a new one made on demand.
void before_fork() { g_mutex.lock(); }
void after_fork_parent() { g_mutex.unlock(); }
void after_fork_child() {
  new std::shared_ptr<Pool>(std::move(g_pool));  // intentional leak, see above
  g_mutex.unlock();
}
[[maybe_unused]] const int g_atfork_registered =
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);

std::shared_ptr<Pool> current_pool() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_num_threads == 0) g_num_threads = default_num_threads();
  if (g_num_threads > 1 && (!g_pool || g_pool->size() != g_num_threads)) {
    g_pool = std::make_shared<Pool>(g_num_threads);
  }
  return g_num_threads > 1 ? g_pool : nullptr;
}

}  // namespace

int get_num_threads() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_num_threads == 0) g_num_threads = default_num_threads();
  return g_num_threads;
}

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("num_threads must be >= 1");
  std::shared_ptr<Pool> old;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_num_threads = n;
    old = std::move(g_pool);  // joined outside the lock, once any running job lets go of it
  }
}

void parallel_for(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
  if (n <= 0) return;
  if (n > std::max<int64_t>(grain, 1) && !t_inside_job) {
    std::shared_ptr<Pool> pool = current_pool();
    if (pool && pool->try_run(n, grain, fn, ctx)) return;
  }
  fn(ctx, 0, n);
}

}  // namespace pyfastcnn
