#include "pyfastcnn/parallel.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
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

// ---- running on the process's OpenMP runtime -----------------------------------------------
// PyTorch runs its CPU ops on GNU OpenMP, whose idle workers spin for milliseconds after each
// op. A second pool (ours) then fights them for the cores: on 2 cores our 2-thread kernels ran
// 3x slower right after a torch op. So when a libgomp is already loaded (PyTorch's), parallel
// regions run on its threads, found at run time: nothing links against it at build time.
// PYFASTCNN_THREADING=own forces pyfastcnn's pool. Forked children use their own pool.
using GompParallelFn = void (*)(void (*)(void*), void*, unsigned, unsigned);

struct OpenMpRuntime {
  GompParallelFn parallel = nullptr;
  std::string library;
  pid_t pid = 0;
};

int find_gomp(struct dl_phdr_info* info, size_t, void* data) {
  auto* rt = static_cast<OpenMpRuntime*>(data);
  const char* name = info->dlpi_name;
  if (!name || !std::strstr(name, "libgomp")) return 0;
  void* handle = dlopen(name, RTLD_NOLOAD | RTLD_LAZY);  // already loaded: adds a reference
  if (!handle) return 0;
  rt->parallel = reinterpret_cast<GompParallelFn>(dlsym(handle, "GOMP_parallel"));
  if (!rt->parallel) return 0;
  rt->library = name;
  return 1;
}

const OpenMpRuntime& openmp_runtime() {
  static const OpenMpRuntime rt = [] {
    OpenMpRuntime found;
    const char* mode = std::getenv("PYFASTCNN_THREADING");
    if (mode && std::strcmp(mode, "own") == 0) return found;
    dl_iterate_phdr(find_gomp, &found);
    found.pid = getpid();
    return found;
  }();
  return rt;
}

struct OpenMpJob {
  RangeFn fn;
  void* ctx;
  int64_t n, chunk, num_chunks;
  std::atomic<int64_t> next{0};
};

void openmp_body(void* data) {
  auto* job = static_cast<OpenMpJob*>(data);
  const bool was_inside = t_inside_job;
  t_inside_job = true;
  for (;;) {
    const int64_t c = job->next.fetch_add(1, std::memory_order_relaxed);
    if (c >= job->num_chunks) break;
    const int64_t begin = c * job->chunk;
    job->fn(job->ctx, begin, std::min(job->n, begin + job->chunk));
  }
  t_inside_job = was_inside;
}

std::atomic<bool> g_openmp_busy{false};

// True when the job ran on the OpenMP runtime.
bool try_run_openmp(int64_t n, int64_t grain, RangeFn fn, void* ctx, int threads) {
  const OpenMpRuntime& rt = openmp_runtime();
  if (!rt.parallel || rt.pid != getpid()) return false;
  bool expected = false;  // a concurrent caller runs inline rather than add a second team
  if (!g_openmp_busy.compare_exchange_strong(expected, true)) return false;
  OpenMpJob job;
  job.fn = fn;
  job.ctx = ctx;
  job.n = n;
  job.chunk = std::max<int64_t>(grain, 1);
  job.num_chunks = (n + job.chunk - 1) / job.chunk;
  rt.parallel(openmp_body, &job,
              static_cast<unsigned>(std::min<int64_t>(threads, job.num_chunks)), 0);
  g_openmp_busy.store(false);
  return true;
}

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
    const int threads = get_num_threads();
    if (threads > 1 && try_run_openmp(n, grain, fn, ctx, threads)) return;
    std::shared_ptr<Pool> pool = current_pool();
    if (pool && pool->try_run(n, grain, fn, ctx)) return;
  }
  fn(ctx, 0, n);
}

std::string threading_backend() {
  const OpenMpRuntime& rt = openmp_runtime();
  if (rt.parallel && rt.pid == getpid()) return "openmp (" + rt.library + ")";
  return "own pool";
}

}  // namespace pyfastcnn
