// Server metrics in the Prometheus text format: request counts by status, latency histograms (time to
// first token, inter-token latency), and the scheduler's gauges and token counters read at scrape time.
// Thread-safety: every method may be called from any thread.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine/scheduler.h"

namespace atp {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double x);
  // Appends the _bucket (cumulative, with +Inf), _sum and _count lines.
  void Write(const std::string& name, const std::string& help, std::string* out) const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class ServerMetrics {
 public:
  ServerMetrics();
  void CountRequest(const std::string& endpoint, int status);
  void ObserveFirstToken(double seconds) { ttft_.Observe(seconds); }
  void ObserveInterToken(double seconds) { itl_.Observe(seconds); }
  std::string Render(const Scheduler::Stats& s) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (endpoint, status) -> count
  Histogram ttft_, itl_;
};

}  // namespace atp
