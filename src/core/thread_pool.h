// A fixed pool of worker threads for data-parallel loops (heads, output rows).
// Thread-safety: any thread may call ParallelFor. One caller at a time gets the workers; a call made
// while they are busy (another thread's loop, or a loop nested in a task) runs on its caller alone.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace atp {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads <= 0: hardware concurrency
  ~ThreadPool();
  int size() const { return int(workers_.size()) + 1; }

  // Calls fn(begin, end, thread_index) over [0, n) split into size() contiguous ranges;
  // the calling thread takes range 0. Returns when all ranges are done. Run on the caller alone (the
  // workers busy, or a pool of one thread) it is fn(0, n, 0).
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);

  // The process-wide pool used by kernels; Configure() before first use to set its size.
  static ThreadPool& Global();
  static void Configure(int threads);

 private:
  void WorkerLoop(int index);
  std::vector<std::thread> workers_;
  std::mutex caller_mu_;  // held by the caller that has the workers
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t job_n_ = 0;
  // Written under mu_; atomic so that a thread may poll them without it (the short spin before a wait).
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;
};

}  // namespace atp
