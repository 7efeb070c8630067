#include "server/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace atp {

namespace {
// Integers exactly (byte counts exceed six digits), other values to nine significant digits.
std::string Num(double x) {
  char buf[40];
  if (x == std::floor(x) && std::fabs(x) < 1e15) std::snprintf(buf, sizeof buf, "%.0f", x);
  else std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}
void Metric(std::string* out, const std::string& name, const char* type, const std::string& help, double value) {
  *out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + Num(value) + "\n";
}
}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1) {}

void Histogram::Observe(double x) {
  std::lock_guard<std::mutex> lk(mu_);
  const size_t b = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), x) - bounds_.begin());
  ++counts_[b];
  sum_ += x;
  ++count_;
}

void Histogram::Write(const std::string& name, const std::string& help, std::string* out) const {
  std::lock_guard<std::mutex> lk(mu_);
  *out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cum = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cum += counts_[i];
    const std::string le = i < bounds_.size() ? Num(bounds_[i]) : "+Inf";
    *out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(cum) + "\n";
  }
  *out += name + "_sum " + Num(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

ServerMetrics::ServerMetrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}) {}

void ServerMetrics::CountRequest(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lk(mu_);
  ++requests_[{endpoint, status}];
}

std::string ServerMetrics::Render(const Scheduler::Stats& s) const {
  std::string out = "# HELP atp_requests_total Completion requests answered, by endpoint and HTTP status.\n"
                    "# TYPE atp_requests_total counter\n";
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& [key, n] : requests_)
      out += "atp_requests_total{endpoint=\"" + key.first + "\",code=\"" + std::to_string(key.second) + "\"} " +
             std::to_string(n) + "\n";
  }
  Metric(&out, "atp_prompt_tokens_total", "counter", "Prompt tokens run through the model.", double(s.prompt_tokens));
  Metric(&out, "atp_generated_tokens_total", "counter", "Tokens sampled.", double(s.generated_tokens));
  Metric(&out, "atp_forward_passes_total", "counter", "Batched forward passes.", double(s.forward_passes));
  Metric(&out, "atp_queue_depth", "gauge", "Requests waiting for admission.", double(s.queued));
  Metric(&out, "atp_running_sequences", "gauge", "Sequences in the running batch.", double(s.running));
  Metric(&out, "atp_kv_bytes_in_use", "gauge",
         "KV bytes held now: the engine's page store's leased pages (prefix cache included, a shared page once), "
         "plus device policies' buffers.",
         double(s.kv.used_bytes));
  Metric(&out, "atp_kv_bytes_reserved", "gauge",
         "KV budget charged, in bytes of whole pages: what atp_kv_bytes_in_use holds plus the growth reserved "
         "beyond it for the step about to run and for admitted prompts (while a step runs, the pages it has "
         "leased so far count as both until it ends).",
         double(s.kv.charged_bytes));
  Metric(&out, "atp_kv_page_store_bytes", "gauge",
         "Bytes of the pages leased from the engine's page store now: host policies' KV rows and the prefix cache's blocks.",
         double(s.kv_page_bytes));
  Metric(&out, "atp_kv_page_store_peak_bytes", "gauge",
         "The most bytes of pages leased at once since start, within a forward pass too (rows a step appends "
         "before its update drops them), at most atp_kv_page_store_capacity_bytes.",
         double(s.kv_page_peak_bytes));
  Metric(&out, "atp_kv_page_store_capacity_bytes", "gauge",
         "The page store's bound: the KV budget in whole pages of the pool; a lease past it is refused.",
         double(s.kv_page_capacity_bytes));
  Metric(&out, "atp_kv_bytes_capacity", "gauge", "KV budget in bytes (--kv-memory).", double(s.kv.capacity_bytes));
  const std::string page = std::to_string(s.kv.page_bytes);
  Metric(&out, "atp_kv_pages_used", "gauge",
         "KV budget used, in pages of " + page + " bytes: the page store's leases plus reservations (atp_kv_bytes_reserved).",
         double(s.kv.pages_used()));
  Metric(&out, "atp_kv_pages_free", "gauge", "KV budget free, in pages of " + page + " bytes: what admission and steps can still reserve.",
         double(s.kv.pages() - std::min(s.kv.pages(), s.kv.pages_used())));
  Metric(&out, "atp_preempted_sequences", "gauge", "Sequences preempted for KV memory, waiting to be recomputed.",
         double(s.preempted));
  Metric(&out, "atp_preemptions_total", "counter", "Sequences preempted because the KV budget ran out of pages (their pages went back to the store).",
         double(s.preemptions));
  Metric(&out, "atp_recomputed_tokens_total", "counter", "Tokens run through the model again after a preemption.",
         double(s.recomputed_tokens));
  Metric(&out, "atp_prefix_cache_queries_total", "counter",
         "Prompt tokens looked up in the prefix cache (--no-prefix-caching: none).", double(s.prefix_queried_tokens));
  Metric(&out, "atp_prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache, not run again.",
         double(s.prefix_hit_tokens));
  Metric(&out, "atp_prefix_cache_blocks", "gauge", "64-token KV blocks the prefix cache holds.",
         double(s.prefix_cache_blocks));
  Metric(&out, "atp_prefix_cache_bytes", "gauge",
         "Bytes of KV pages the prefix cache holds (pages of the store, some also held by running sequences; given back before anyone waits).",
         double(s.prefix_cache_bytes));
  Metric(&out, "atp_step_forward_seconds_total", "counter",
         "Seconds the scheduler spent in the model's forward passes (logits computed, not copied).", s.forward_seconds);
  Metric(&out, "atp_step_sample_seconds_total", "counter",
         "Seconds the scheduler spent choosing tokens from the logits (sampling, logprobs, the copy back).",
         s.sample_seconds);
  ttft_.Write("atp_time_to_first_token_seconds", "From request arrival to its first sampled token.", &out);
  itl_.Write("atp_inter_token_latency_seconds", "Between consecutive sampled tokens of a sequence.", &out);
  return out;
}

}  // namespace atp
