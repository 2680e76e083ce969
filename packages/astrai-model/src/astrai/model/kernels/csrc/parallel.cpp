// The worker team behind astrai::parallel_for (why: parallel.h).
//
// One process-wide team of num_threads() - 1 workers; the submitting thread runs chunk 0. A job
// is published by bumping `generation_`; workers spin on it with pause, and after kSpinMicros
// without a job they sleep on a condition variable (pause, not sched_yield: docs/kernels.md).
// Only one thread submits at a time (the others run their loop inline), so
// two engines in one process stay correct, just not parallel at once.
#include "parallel.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace astrai {
namespace {

// Long enough to bridge the gaps between one step's regions (tens of microseconds at batch 1),
// short enough that an engine waiting for its next step gives the cores back almost at once.
constexpr auto kSpinMicros = std::chrono::microseconds(200);

thread_local bool t_inside_job = false;

class Team {
 public:
  explicit Team(int size) : size_(size) {
    for (int tid = 1; tid < size; ++tid) workers_.emplace_back([this, tid] { loop(tid); });
  }

  ~Team() {
    stop_.store(true);
    generation_.fetch_add(1);
    {
      std::lock_guard<std::mutex> lock(sleep_mutex_);
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  int size() const { return size_; }

  // Runs f over `parts` chunks of `chunk` items from `begin` (parts <= size()).
  void run(int parts, int64_t begin, int64_t end, int64_t chunk, const std::function<void(int64_t, int64_t)>& f) {
    fn_ = &f;
    begin_ = begin;
    end_ = end;
    chunk_ = chunk;
    parts_ = parts;
    error_ = nullptr;
    pending_.store(size_ - 1, std::memory_order_relaxed);  // every worker acknowledges every job
    generation_.fetch_add(1);  // seq_cst: pairs with the sleepers_ check in wait_for_job
    if (sleepers_.load() > 0) {
      { std::lock_guard<std::mutex> lock(sleep_mutex_); }
      wake_.notify_all();
    }
    run_chunk(0);
    while (pending_.load(std::memory_order_acquire) != 0) _mm_pause();
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run_chunk(int tid) {
    const int64_t lo = begin_ + tid * chunk_;
    if (lo >= end_) return;
    const bool outer = t_inside_job;
    t_inside_job = true;
    try {
      (*fn_)(lo, std::min(end_, lo + chunk_));
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
    }
    t_inside_job = outer;
  }

  uint64_t wait_for_job(uint64_t seen) {
    const auto start = std::chrono::steady_clock::now();
    for (int spins = 0;; ++spins) {
      const uint64_t g = generation_.load(std::memory_order_acquire);
      if (g != seen) return g;
      if ((spins & 15) != 0 || std::chrono::steady_clock::now() - start < kSpinMicros) {
        _mm_pause();
        continue;
      }
      std::unique_lock<std::mutex> lock(sleep_mutex_);
      sleepers_.fetch_add(1);  // seq_cst, then re-check under the lock: no lost wake-up
      wake_.wait(lock, [&] { return generation_.load() != seen; });
      sleepers_.fetch_sub(1);
      return generation_.load(std::memory_order_acquire);
    }
  }

  void loop(int tid) {
    uint64_t seen = 0;  // the generation at construction: a job may be published before this thread starts
    for (;;) {
      seen = wait_for_job(seen);
      if (stop_.load()) return;
      // A worker reads the job only between seeing its generation and acknowledging it; the
      // submitter writes the next job only after every acknowledgement.
      if (tid < parts_) run_chunk(tid);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  const int size_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::mutex sleep_mutex_;
  std::condition_variable wake_;
  std::mutex error_mutex_;
  std::exception_ptr error_;
  // the current job: written by the submitter before generation_ is bumped
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t begin_ = 0, end_ = 0, chunk_ = 0;
  int parts_ = 0;
};

std::mutex g_submit;          // one submitter at a time
std::unique_ptr<Team> g_team;  // sized to num_threads(), rebuilt when that changes
pid_t g_team_pid = 0;          // a forked child has none of the parent's workers

Team& team_of_size(int size) {
  if (g_team && g_team_pid != getpid()) (void)g_team.release();  // the parent's threads do not exist here
  if (!g_team || g_team->size() != size) {
    g_team.reset();
    g_team = std::make_unique<Team>(size);
    g_team_pid = getpid();
  }
  return *g_team;
}

}  // namespace

int num_threads() { return std::max(1, at::get_num_threads()); }

void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& f) {
  if (begin >= end) return;
  const int64_t n = end - begin;
  const int64_t threads = num_threads();
  const int64_t parts = grain > 0 ? std::min<int64_t>(threads, (n + grain - 1) / grain) : std::min<int64_t>(threads, n);
  if (parts <= 1 || t_inside_job || at::in_parallel_region()) {
    f(begin, end);
    return;
  }
  std::unique_lock<std::mutex> lock(g_submit, std::try_to_lock);
  if (!lock.owns_lock()) {  // another thread's job holds the team
    f(begin, end);
    return;
  }
  const int64_t chunk = (n + parts - 1) / parts;
  team_of_size(static_cast<int>(threads)).run(static_cast<int>(parts), begin, end, chunk, f);
}

void parallel_for_stealing(int64_t begin, int64_t end, int64_t piece, const std::function<void(int64_t, int64_t)>& f) {
  if (begin >= end) return;
  piece = std::max<int64_t>(1, piece);
  const int64_t pieces = (end - begin + piece - 1) / piece;
  const int64_t parts = std::min<int64_t>(num_threads(), pieces);
  if (parts <= 1 || pieces >= (int64_t{1} << 31)) {  // (a run's bounds pack into 32 bits each)
    parallel_for(begin, end, piece, f);
    return;
  }
  // Part i owns pieces [lo, hi), packed as lo | hi << 32: it takes pieces from its low end, and
  // a part that has run out takes them from the high end of another's, one CAS per piece.
  struct alignas(64) Owned {
    std::atomic<uint64_t> bounds;
  };
  std::vector<Owned> owned(static_cast<size_t>(parts));
  for (int64_t i = 0; i < parts; ++i)
    owned[i].bounds.store(static_cast<uint64_t>(pieces * i / parts) | static_cast<uint64_t>(pieces * (i + 1) / parts) << 32,
                          std::memory_order_relaxed);
  const auto take = [&](Owned& o, bool from_low) -> int64_t {
    uint64_t b = o.bounds.load(std::memory_order_relaxed);
    for (;;) {
      const uint64_t lo = b & 0xFFFFFFFFu, hi = b >> 32;
      if (lo >= hi) return -1;
      const uint64_t next = from_low ? (lo + 1) | hi << 32 : lo | (hi - 1) << 32;
      if (o.bounds.compare_exchange_weak(b, next, std::memory_order_relaxed)) return static_cast<int64_t>(from_low ? lo : hi - 1);
    }
  };
  const auto run_piece = [&](int64_t p) { f(begin + p * piece, std::min(end, begin + (p + 1) * piece)); };
  parallel_for(0, parts, 1, [&](int64_t self, int64_t) {
    for (int64_t p; (p = take(owned[self], true)) >= 0;) run_piece(p);
    for (int64_t k = 1; k < parts; ++k) {
      Owned& victim = owned[(self + k) % parts];
      for (int64_t p; (p = take(victim, false)) >= 0;) run_piece(p);
    }
  });
}

}  // namespace astrai
