// Continuous batching: one thread runs iteration-level scheduling over many sequences. Each step packs
// one decode token of every running sequence and prompt chunks of those still prefilling (up to
// max_batch_tokens) into a single LlamaModel::Forward, then has the model choose each sequence's next
// token where the logits are (LlamaModel::ChooseTokens: on a GPU only ids and logprobs come back).
// It deals in token ids only: text, stop strings and HTTP belong to its callers.
//
// KV memory (engine/kv_pool.h): the sequences' host policies lease their rows from the scheduler's page
// store, and the budget is what that store holds plus what is reserved beyond it. A request is admitted
// when the pages its prompt needs (and its first step, at its peak) are free, and each step first
// reserves the most its tokens will hold during and after it. When they are not there, the most
// recently admitted sequence is preempted (or, where the pages are for its own prompt chunk, the chunk
// waits a step): its KV is dropped (its pages go back to the store) and it waits, ahead of new
// requests, to be recomputed (its prompt and the tokens it had generated are run through the model
// again, without sampling, then it goes on). A sequence thus costs what it holds, not its worst case, and a request's
// tokens are the same whether or not it was preempted.
//
// With prefix caching, the cache's blocks are pages of the same store (a page a running sequence also
// holds counts once); the cache grows only into the free room, and gives room back (least recently used
// blocks first) before a request waits or a sequence is preempted: cached blocks never cost a running
// request anything.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "engine/kv_pool.h"
#include "engine/prefix_cache.h"
#include "sampling/params.h"
#include "engine/sequence.h"

namespace atp {

struct SchedulerOptions {
  int context = 0;              // tokens per sequence (prompt + generated); 0: the model's maximum
  int max_batch_tokens = 256;   // tokens per forward pass: decode steps plus prefill chunks
  int max_seqs = 64;            // sequences running at once (at most max_batch_tokens)
  int max_queue = 64;           // requests waiting for admission; more are refused
  size_t kv_memory = size_t(1) << 30;  // KV budget in bytes: the page store's leases and the reservations
  size_t kv_page = size_t(64) << 10;   // accounting granularity of the budget (the store's pages vary in size)
  // Pages (in thousandths of the budget) that admitting a new sequence must leave free, so that the
  // running ones can grow for a few steps before someone is preempted (vLLM's watermark, 1%).
  int admit_watermark_permille = 10;
  // Automatic prefix caching (engine/prefix_cache.h): whole 64-token blocks of the sequences' KV stay
  // in the page store, within the budget's free room, after they finish, and a prompt that starts with
  // cached blocks adopts them instead of running them. Only policies that share their pages take part (KvPolicy::SharePages).
  bool prefix_caching = false;
};

struct TokenEvent {
  int32_t id = 0;
  float logprob = 0;                            // log-softmax of the raw logits at id (with logprobs)
  std::vector<std::pair<int32_t, float>> top;   // the best tokens and their logprobs (with top_logprobs > 0)
  std::chrono::steady_clock::time_point time;   // when it was sampled
};

struct SeqRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int max_tokens = 16;
  std::shared_ptr<const KvPolicyFactory> kv;
  int top_logprobs = -1;  // -1: no logprobs; k >= 0: the sampled token's logprob and the k best
  // EOS as a token like any other: only max_tokens, the context and on_token end the sequence
  // (vLLM's and llama.cpp's ignore_eos, for benchmarks that need a fixed number of tokens).
  bool ignore_eos = false;
  // Both run on the scheduler thread and must be quick. on_token sees every sampled token except EOS
  // (unless ignore_eos) and returns false to end the sequence as "stop" (a stop string matched).
  // on_finish is called exactly once, last, with "stop", "length" or "cancelled", or with an error Status.
  std::function<bool(const TokenEvent&)> on_token;
  std::function<void(const std::string& finish_reason, const Status& error)> on_finish;
};

class Scheduler {
 public:
  // eos_ids end a sequence ("stop"). Starts the scheduling thread.
  Scheduler(LlamaModel& model, std::vector<int32_t> eos_ids, SchedulerOptions opt);
  ~Scheduler();  // cancels what is left and joins the thread

  // Measures a policy's KV footprint now (Submit does it on first use of a policy, under the lock that
  // serializes the model's kernels). Returns the estimate for a full-context sequence.
  size_t Prepare(const KvPolicyFactory& kv);

  // Queues a request and returns its id. ResourceExhausted: the queue is full. InvalidArgument: the
  // request can never fit the KV pool, or is malformed. Unsupported: the scheduler is draining.
  Result<uint64_t> Submit(SeqRequest r);
  // Ends a queued or running request as "cancelled"; unknown or finished ids are ignored.
  void Cancel(uint64_t id);
  // Refuses new requests and waits for queued and running ones to finish, up to `timeout`; those
  // still unfinished then are cancelled. Returns whether all finished in time.
  bool Drain(std::chrono::milliseconds timeout);

  // Policies whose measured KV footprint is kept; beyond it the least recently used is measured again.
  static constexpr size_t kMaxFootprints = 64;
  struct Stats {
    size_t queued = 0, running = 0;
    size_t preempted = 0;  // sequences waiting to be recomputed after a preemption
    KvPool::Usage kv;
    // pages_: leased now, the most ever (within a step too), and its bound (kv.capacity_bytes)
    size_t kv_page_bytes = 0, kv_page_peak_bytes = 0, kv_page_capacity_bytes = 0;
    uint64_t forward_passes = 0, prompt_tokens = 0, generated_tokens = 0;
    // Totals since start: preemptions, and tokens run through the model again after one (prompt_tokens
    // counts each prompt token once).
    uint64_t preemptions = 0, recomputed_tokens = 0;
    // Seconds the scheduler thread spent in the model's forward passes and in choosing tokens.
    double forward_seconds = 0, sample_seconds = 0;
    size_t footprints = 0;  // policies whose KV footprint is cached (at most kMaxFootprints)
    // Prefix caching: prompt tokens looked up and found (totals, as vLLM counts them), and what the
    // cache holds now.
    uint64_t prefix_queried_tokens = 0, prefix_hit_tokens = 0;
    size_t prefix_cache_blocks = 0, prefix_cache_bytes = 0;
  };
  Stats stats() const;
  const SchedulerOptions& options() const { return opt_; }

 private:
  struct Waiting {
    uint64_t id;
    SeqRequest req;
    std::shared_ptr<const KvFootprint> footprint;  // of req.kv
  };
  struct Running;

  void Loop();
  void Admit(std::vector<Waiting>* admitted);  // under mu_; resumes preempted_ first
  // What admitting a request reserves: the pages its prefill of `prefill` tokens holds once run, or the
  // peak of its first step where that is more.
  size_t AdmitBytes(const KvFootprint& f, const SeqRequest& req, size_t prefill) const;
  // The most r holds during a step of `tokens` tokens (Sequence::StepLeaseBound) or after it (its
  // footprint), whichever is more; ReserveStep reserves that before the step.
  size_t StepBytes(const Running& r, size_t tokens) const;
  bool ReserveStep(Running& r, size_t tokens);
  // After a step: r's reservation becomes what its next step needs (and, while prefilling, what its
  // whole prefill holds), so that admission leaves the room for it; a larger chunk's transient goes.
  void Settle(Running& r);
  // Prefix cache: gives half its room back to the pool (false: it held nothing); starts r's prefill from
  // cached blocks; offers r's whole blocks to it.
  bool ShrinkCache();
  void AttachPrefix(Running& r);
  void OfferPrefix(Running& r);
  void MirrorCache();  // cache_blocks_, cache_bytes_ = what the cache holds
  void Preempt(Running& r);                                // drops r's KV; it waits in preempted_
  void Step();
  void Emit(Running& r, const TokenChoice& c);  // takes the chosen token, or finishes r
  void Finish(Running& r, const std::string& reason, const Status& error);  // marks r done
  // Destroys r (its pages go back to the store) and then calls its on_finish: once it has left running_,
  // the pool and the store.
  static void Notify(std::unique_ptr<Running> r);
  std::shared_ptr<const KvFootprint> Footprint(const KvPolicyFactory& kv);  // cached, measured when new

  LlamaModel& model_;
  const std::vector<int32_t> eos_;
  const SchedulerOptions opt_;
  // Where the running sequences' host-side KV rows and the prefix cache's blocks live (the CPU backend's
  // policies; the GPU's keep device buffers, which pool_ counts by their Bytes()). Bounded by the budget:
  // pool_ reserves each step's bound, so no lease is refused unless a policy's bound is wrong, and then
  // that step's requests end with the error (engine/kv_pool.h). Declared before the pool that reads it
  // and the sequences and cache that lease from it, so that it outlives them.
  PageStore pages_;
  KvPool pool_;
  std::unique_ptr<PrefixCache> cache_;  // null without prefix caching; scheduler thread only

  struct CachedFootprint {
    std::shared_ptr<const KvFootprint> f;
    uint64_t last_use = 0;
  };
  mutable std::mutex fp_mu_;
  std::map<std::string, CachedFootprint> footprints_;  // by policy Describe(), at most kMaxFootprints
  uint64_t fp_clock_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<Waiting> queue_;
  std::unordered_set<uint64_t> cancels_;
  size_t running_count_ = 0;  // mirror of running_.size() for other threads
  uint64_t next_id_ = 1;
  bool draining_ = false, stop_ = false;
  bool cancel_all_ = false;  // Drain ran out of time

  std::vector<std::unique_ptr<Running>> running_;  // scheduler thread only, in admission order
  std::deque<std::unique_ptr<Running>> preempted_;  // scheduler thread only, oldest admission first
  size_t preempted_count_ = 0;  // mirror of preempted_.size() for other threads, under mu_
  std::vector<TokenQuery> queries_;  // scratch of Step
  std::vector<TokenChoice> choices_;
  std::atomic<uint64_t> forward_passes_{0}, prompt_tokens_{0}, generated_tokens_{0};
  std::atomic<uint64_t> forward_ns_{0}, sample_ns_{0};
  std::atomic<uint64_t> preemptions_{0}, recomputed_tokens_{0};
  std::atomic<uint64_t> prefix_queried_{0}, prefix_hits_{0};
  std::atomic<size_t> cache_blocks_{0}, cache_bytes_{0};  // mirrors of cache_ for other threads
  std::thread thread_;
};

}  // namespace atp
