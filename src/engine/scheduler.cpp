#include "engine/scheduler.h"

#include <algorithm>

namespace atp {

namespace {

SchedulerOptions Normalize(SchedulerOptions o, const LlamaModel& model) {
  if (o.context <= 0 || o.context > model.config().max_position) o.context = model.config().max_position;
  o.max_batch_tokens = std::max(o.max_batch_tokens, 1);
  // Every running sequence contributes a decode token to each step, so they must all fit one batch.
  o.max_seqs = std::clamp(o.max_seqs, 1, o.max_batch_tokens);
  o.max_queue = std::max(o.max_queue, 0);
  return o;
}

std::string MiB(size_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

// The pages admission leaves free for the running sequences to grow into (SchedulerOptions).
size_t WatermarkPages(const KvPool::Usage& u, int permille) { return u.pages() * size_t(std::max(permille, 0)) / 1000; }

}  // namespace

struct Scheduler::Running {
  Running(Waiting w, const LlamaModel& model, PageStore* pages)
      : id(w.id),
        req(std::move(w.req)),
        footprint(std::move(w.footprint)),
        seq(model, *req.kv, pages),
        policy(req.kv->Describe()),
        history(req.prompt),
        prefill_to(req.prompt.size()) {}
  bool prefilling() const { return fed < prefill_to; }

  uint64_t id;
  SeqRequest req;
  std::shared_ptr<const KvFootprint> footprint;
  Sequence seq;
  std::string policy;            // req.kv->Describe(): the prefix cache's key
  std::vector<int32_t> history;  // prompt then generated tokens, for the repetition penalty
  // Prefill runs history[0, prefill_to) through the model: the prompt, or after a preemption everything
  // the sequence had in its KV. fed counts the tokens of it already run.
  size_t prefill_to = 0, fed = 0;
  bool resumed = false;          // recomputing after a preemption: the end of prefill samples nothing
  size_t computed = 0;           // most tokens its KV ever held: those below are run again after a preemption
  int generated = 0;             // also the index of its next draw (sampling/rules.h)
  int32_t next = 0;              // the last sampled token: the input of the next decode step
  int64_t offered = 0;           // whole blocks of its KV offered to the prefix cache
  bool shares = true;            // false once its policy turned out not to share pages
  bool done = false;
  std::string finish_reason;     // set by Finish; on_finish hears them once r has left the pool
  Status finish_error;
};

Scheduler::Scheduler(LlamaModel& model, std::vector<int32_t> eos_ids, SchedulerOptions opt)
    : model_(model),
      eos_(std::move(eos_ids)),
      opt_(Normalize(opt, model)),
      pages_(KvPool::Capacity(opt_.kv_memory, opt_.kv_page)),
      pool_(opt_.kv_memory, opt_.kv_page, pages_),
      cache_(opt_.prefix_caching ? std::make_unique<PrefixCache>(pages_) : nullptr),
      thread_([this] { Loop(); }) {}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::shared_ptr<const KvFootprint> Scheduler::Footprint(const KvPolicyFactory& kv) {
  const std::string key = kv.Describe();
  {
    std::lock_guard<std::mutex> lk(fp_mu_);
    if (auto it = footprints_.find(key); it != footprints_.end()) {
      it->second.last_use = ++fp_clock_;
      return it->second.f;
    }
  }
  // Measured without any lock, beside the running forward passes (KvFootprint::Measure says why that is
  // safe): a request with a new policy string waits for its own probe, nobody else does. The probe
  // holds what one sequence of that length holds: beyond 4096 tokens BytesAt extends the last measured
  // slope instead, so a long-context model is not probed at its full context.
  auto f = std::make_shared<const KvFootprint>(KvFootprint::Measure(model_, kv, std::min(opt_.context, 4096)));
  std::lock_guard<std::mutex> lk(fp_mu_);
  // Bounded: a client sending endless policy variants evicts the least recently used, not memory.
  if (footprints_.size() >= kMaxFootprints) {
    auto oldest = footprints_.begin();
    for (auto it = footprints_.begin(); it != footprints_.end(); ++it)
      if (it->second.last_use < oldest->second.last_use) oldest = it;
    footprints_.erase(oldest);
  }
  footprints_[key] = {f, ++fp_clock_};
  return f;
}

size_t Scheduler::Prepare(const KvPolicyFactory& kv) { return Footprint(kv)->BytesAt(opt_.context); }

Result<uint64_t> Scheduler::Submit(SeqRequest r) {
  if (!r.kv) return Status::InvalidArgument("no KV policy given");
  if (r.prompt.empty()) return Status::InvalidArgument("prompt is empty");
  if (r.max_tokens < 1) return Status::InvalidArgument("max_tokens must be >= 1");
  if (int64_t(r.prompt.size()) >= opt_.context)
    return Status::InvalidArgument("prompt of " + std::to_string(r.prompt.size()) +
                                   " tokens does not fit the context of " + std::to_string(opt_.context) + " tokens");
  ATP_RETURN_IF_ERROR(r.sampling.Validate());
  const int total = int(std::min<int64_t>(opt_.context, int64_t(r.prompt.size()) + r.max_tokens));
  auto footprint = Footprint(*r.kv);
  // Admission charges only the prompt (and its first step's peak), but a sequence that could not run to
  // its end alone in the whole pool would be preempted for ever, and one whose first step could not would
  // wait for ever (a whole prompt under h2o or snapkv holds all its rows before eviction).
  const size_t estimate = std::max(footprint->BytesAt(total), AdmitBytes(*footprint, r, r.prompt.size()));
  if (!pool_.Fits(estimate))
    return Status::InvalidArgument("a sequence of " + std::to_string(total) + " tokens under kv policy " +
                                   r.kv->Describe() + " needs " + MiB(estimate) + " of KV memory; the pool holds " +
                                   MiB(pool_.capacity_bytes()));
  std::lock_guard<std::mutex> lk(mu_);
  if (draining_ || stop_) return Status::Unsupported("the server is shutting down");
  if (int(queue_.size()) >= opt_.max_queue)
    return Status::ResourceExhausted("the queue is full (" + std::to_string(queue_.size()) + " requests waiting)");
  const uint64_t id = next_id_++;
  queue_.push_back({id, std::move(r), std::move(footprint)});
  cv_.notify_all();
  return id;
}

void Scheduler::Cancel(uint64_t id) {
  std::lock_guard<std::mutex> lk(mu_);
  cancels_.insert(id);
  cv_.notify_all();
}

bool Scheduler::Drain(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(mu_);
  draining_ = true;
  const auto idle = [&] { return queue_.empty() && running_count_ == 0; };
  if (idle_cv_.wait_for(lk, timeout, idle)) return true;
  cancel_all_ = true;
  cv_.notify_all();
  idle_cv_.wait(lk, idle);
  return false;
}

Scheduler::Stats Scheduler::stats() const {
  Stats s;
  {
    std::lock_guard<std::mutex> lk(mu_);
    s.queued = queue_.size();
    s.running = running_count_;
    s.preempted = preempted_count_;
  }
  s.kv = pool_.usage();
  s.kv_page_bytes = pages_.leased_bytes();
  s.kv_page_peak_bytes = pages_.peak_bytes();
  s.kv_page_capacity_bytes = pages_.capacity_bytes();
  {
    std::lock_guard<std::mutex> lk(fp_mu_);
    s.footprints = footprints_.size();
  }
  s.forward_passes = forward_passes_;
  s.prompt_tokens = prompt_tokens_;
  s.generated_tokens = generated_tokens_;
  s.preemptions = preemptions_;
  s.recomputed_tokens = recomputed_tokens_;
  s.prefix_queried_tokens = prefix_queried_;
  s.prefix_hit_tokens = prefix_hits_;
  s.prefix_cache_blocks = cache_blocks_;
  s.prefix_cache_bytes = cache_bytes_;
  s.forward_seconds = double(forward_ns_) * 1e-9;
  s.sample_seconds = double(sample_ns_) * 1e-9;
  return s;
}

// Strict arrival order, preempted sequences first: a request that does not fit yet holds back those
// behind it, so a large request cannot be starved by a stream of small ones. A sequence is admitted
// when the pages its prefill needs are free, leaving the watermark for the running ones to grow into
// (the first sequence needs no watermark: nobody else grows).
void Scheduler::Admit(std::vector<Waiting>* admitted) {
  const size_t watermark = WatermarkPages(pool_.usage(), opt_.admit_watermark_permille);
  const auto room = [&] { return running_.size() + admitted->size() < size_t(opt_.max_seqs); };
  const auto keep_free = [&] { return running_.empty() && admitted->empty() ? 0 : watermark; };
  while (!preempted_.empty() && room()) {
    Running& r = *preempted_.front();
    if (!pool_.TryReserve(r.id, AdmitBytes(*r.footprint, r.req, r.prefill_to), keep_free())) {
      if (ShrinkCache()) continue;
      break;
    }
    running_.push_back(std::move(preempted_.front()));
    preempted_.pop_front();
  }
  while (preempted_.empty() && !queue_.empty() && room()) {
    Waiting& w = queue_.front();
    if (!pool_.TryReserve(w.id, AdmitBytes(*w.footprint, w.req, w.req.prompt.size()), keep_free())) {
      if (ShrinkCache()) continue;
      break;
    }
    admitted->push_back(std::move(w));
    queue_.pop_front();
  }
  running_count_ = running_.size() + admitted->size();
  preempted_count_ = preempted_.size();
}

// The first step is a chunk of at most max_batch_tokens, or the whole prompt (Step).
size_t Scheduler::AdmitBytes(const KvFootprint& f, const SeqRequest& req, size_t prefill) const {
  const size_t first = req.kv->NeedsWholePrompt() ? req.prompt.size() : std::min(prefill, size_t(opt_.max_batch_tokens));
  return std::max(f.BytesAt(int(prefill)), f.FirstStepBytes(int(first)));
}

bool Scheduler::ReserveStep(Running& r, size_t tokens) { return pool_.TryReserve(r.id, StepBytes(r, tokens), 0); }

void Scheduler::MirrorCache() {
  cache_blocks_ = cache_->blocks();
  cache_bytes_ = cache_->bytes();
}

bool Scheduler::ShrinkCache() {
  if (!cache_ || cache_->bytes() == 0) return false;
  cache_->Shrink(cache_->bytes() / 2);  // the store gets back the pages no sequence holds too
  MirrorCache();
  return true;
}

// A prompt's first token must run (its logits choose the next one), so at most the blocks before it.
void Scheduler::AttachPrefix(Running& r) {
  const auto tokens = std::span<const int32_t>(r.history).first(r.prefill_to);
  const int64_t got = cache_->Attach(r.policy, tokens, (int64_t(r.prefill_to) - 1) / PrefixCache::kBlock, r.seq);
  prefix_queried_ += r.prefill_to;
  prefix_hits_ += uint64_t(got);
  prompt_tokens_ += uint64_t(got) - std::min(uint64_t(got), uint64_t(r.computed));
  r.fed = size_t(got);
  r.offered = got / PrefixCache::kBlock;
  pool_.Update(r.id, r.seq.kv_bytes(), r.seq.leased_bytes());  // the adopted pages are the store's already
}

// Into the free room beyond the admission watermark: caching never makes anyone wait. The blocks'
// pages are r's, held once more: the store counts them once, and they cost room only once r lets go.
void Scheduler::OfferPrefix(Running& r) {
  if (!r.shares || r.seq.length() / PrefixCache::kBlock <= r.offered) return;
  const KvPool::Usage u = pool_.usage();
  const size_t watermark = WatermarkPages(u, opt_.admit_watermark_permille) * u.page_bytes;
  const size_t free = u.capacity_bytes - std::min(u.capacity_bytes, u.charged_bytes);
  const size_t room = cache_->bytes() + (free > watermark ? free - watermark : 0);
  r.shares = cache_->Offer(r.policy, r.history, r.seq, room);
  r.offered = r.seq.length() / PrefixCache::kBlock;
  MirrorCache();
}

// Recompute, not swap: the KV is dropped and rebuilt from the tokens, which every policy can do. A
// draw is numbered by the tokens generated before it (TokenQuery::draw), which the preemption keeps, so
// a seeded request continues with the random numbers it would have drawn.
void Scheduler::Preempt(Running& r) {
  pool_.Release(r.id);
  r.computed = std::max(r.computed, size_t(r.seq.length()));
  r.seq = Sequence(model_, *r.req.kv, &pages_);
  if (r.generated > 0) {
    // Its KV held everything but the last sampled token, which the next decode step feeds.
    r.prefill_to = r.history.size() - 1;
    r.resumed = true;
  }
  r.fed = 0;
  ++preemptions_;
}

void Scheduler::Loop() {
  while (true) {
    std::vector<Waiting> admitted, dropped;
    std::unordered_set<uint64_t> cancels;
    bool cancel_all = false;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] {
        return stop_ || !queue_.empty() || !running_.empty() || !preempted_.empty() || !cancels_.empty() || cancel_all_;
      });
      if (stop_) break;
      cancels.swap(cancels_);
      std::swap(cancel_all, cancel_all_);
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (cancel_all || cancels.count(it->id)) {
          dropped.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      Admit(&admitted);
    }
    for (auto& w : dropped)
      if (w.req.on_finish) w.req.on_finish("cancelled", Status::Ok());
    for (auto& w : admitted) running_.push_back(std::make_unique<Running>(std::move(w), model_, &pages_));
    for (auto& r : running_)
      if (cancel_all || cancels.count(r->id)) Finish(*r, "cancelled", Status::Ok());
    std::vector<std::unique_ptr<Running>> finished;
    for (auto& r : preempted_)
      if (cancel_all || cancels.count(r->id)) Finish(*r, "cancelled", Status::Ok()), finished.push_back(std::move(r));
    std::erase(preempted_, nullptr);
    for (int pass = 0; pass < 2; ++pass) {
      for (auto& r : running_)
        if (r->done) pool_.Release(r->id), finished.push_back(std::move(r));
      std::erase(running_, nullptr);
      if (pass == 0 && !running_.empty()) Step();
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      running_count_ = running_.size();
      preempted_count_ = preempted_.size();
    }
    // Finished sequences hear so only now, no longer counted as running, their reservations back in the
    // pool and their pages back in the store: a client that reads /metrics right after its last byte
    // sees its sequence gone.
    for (auto& r : finished) Notify(std::move(r));
    std::lock_guard<std::mutex> lk(mu_);
    if (queue_.empty() && running_.empty() && preempted_.empty()) idle_cv_.notify_all();
  }
  // Stopped: whatever is left ends as cancelled.
  std::deque<Waiting> left;
  {
    std::lock_guard<std::mutex> lk(mu_);
    left.swap(queue_);
  }
  for (auto& w : left)
    if (w.req.on_finish) w.req.on_finish("cancelled", Status::Ok());
  for (auto& r : preempted_) running_.push_back(std::move(r));
  preempted_.clear();
  for (auto& r : running_) Finish(*r, "cancelled", Status::Ok());
  for (auto& r : running_) pool_.Release(r->id);
  {
    std::lock_guard<std::mutex> lk(mu_);
    running_count_ = 0;
    preempted_count_ = 0;
  }
  for (auto& r : running_) Notify(std::move(r));
  running_.clear();
  std::lock_guard<std::mutex> lk(mu_);
  idle_cv_.notify_all();
}

void Scheduler::Step() {
  // Decode steps first (one token each), then prompt chunks in admission order with what is left of
  // the token budget: prefill never delays a running sequence's next token. Each item's pages are
  // reserved before the pass; where they are not free, the most recently admitted sequence gives its up.
  std::vector<ForwardItem> items;
  std::vector<Running*> owners;
  const auto take = [&](Running& r, std::span<const int32_t> tokens) {
    while (!ReserveStep(r, tokens.size())) {
      Running* victim = nullptr;
      size_t live = 0;
      for (auto& p : running_)
        if (!p->done) victim = p.get(), ++live;  // the most recently admitted
      if (ShrinkCache()) continue;  // cached blocks give their room back first
      if (live == 1) {
        // Alone and still short: a policy whose footprint is not monotone in length, or a step whose
        // transient needs more than the whole pool (Submit checks the first step only).
        Finish(r, "", Status::ResourceExhausted("KV memory: the sequence's next step needs more than the whole pool (--kv-memory)"));
        return false;
      }
      // The youngest's prompt chunk that does not fit waits a step rather than drop what the sequence
      // holds: an older sequence that needs the room preempts it then.
      if (victim == &r && r.prefilling()) return false;
      const auto it = std::find(owners.begin(), owners.end(), victim);
      if (it != owners.end()) items.erase(items.begin() + (it - owners.begin())), owners.erase(it);
      Preempt(*victim);
      auto owner = std::find_if(running_.begin(), running_.end(), [&](auto& p) { return p.get() == victim; });
      preempted_.push_front(std::move(*owner));
      running_.erase(owner);
      if (victim == &r) return false;
    }
    items.push_back({r.seq.kv(), tokens, r.seq.length(), false});
    owners.push_back(&r);
    return true;
  };
  int budget = opt_.max_batch_tokens;
  // Indexes, not iterators: take() may preempt, which removes from running_.
  for (size_t i = 0; i < running_.size(); ++i) {
    Running& r = *running_[i];
    if (!r.prefilling() && !r.done && take(r, std::span<const int32_t>(&r.next, 1))) --budget;
  }
  bool prefill_taken = false;
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Running& r = *running_[i];
    if (!r.prefilling() || r.done) continue;
    if (cache_ && r.fed == 0 && r.seq.length() == 0) AttachPrefix(r);
    size_t n = std::min(r.prefill_to - r.fed, size_t(budget));
    if (r.req.kv->NeedsWholePrompt()) {
      // Its prompt goes in one piece, as the step's first prompt chunk even where that exceeds the
      // token budget (the budget is a throughput knob; a prompt waiting for a step with room could wait
      // as long as sequences keep decoding). Later prompts wait for the next step. Generated tokens
      // being recomputed go one per step, as they went when they were sampled.
      if (r.fed < r.req.prompt.size()) {
        if (prefill_taken && n < r.req.prompt.size()) break;
        n = r.req.prompt.size();
      } else {
        n = 1;
      }
    }
    if (!take(r, std::span<const int32_t>(r.history.data() + r.fed, n))) continue;
    prefill_taken = true;
    budget -= int(n);
  }
  if (items.empty()) return;
  const auto nanos_since = [](std::chrono::steady_clock::time_point t) {
    return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t).count());
  };
  auto t0 = std::chrono::steady_clock::now();
  Status st = model_.Forward(items, nullptr);  // the logits stay with the model for ChooseTokens
  forward_ns_ += nanos_since(t0);
  ++forward_passes_;
  // What each holds now, before anyone hears of a token: the reservations the pass used are its pages.
  for (Running* r : owners) pool_.Update(r->id, r->seq.kv_bytes(), r->seq.leased_bytes());
  if (!st.ok()) {
    for (Running* r : owners) Finish(*r, "", st);
    return;
  }
  // Which items sample a token this step: the decode steps and the last chunk of a prompt, but not the
  // end of a recomputation (its next token was sampled before the preemption).
  std::vector<char> emits(items.size(), 0);
  queries_.clear();
  for (size_t i = 0; i < items.size(); ++i) {
    const Running& r = *owners[i];
    if (r.prefilling() && (r.fed + items[i].tokens.size() < r.prefill_to || r.resumed)) continue;
    emits[i] = 1;
    queries_.push_back({int32_t(i), r.req.sampling, r.history, uint64_t(r.generated), r.req.top_logprobs});
  }
  choices_.clear();
  if (!queries_.empty()) {
    t0 = std::chrono::steady_clock::now();
    st = model_.ChooseTokens(queries_, &choices_);
    sample_ns_ += nanos_since(t0);
  }
  if (!st.ok()) {
    for (size_t i = 0; i < items.size(); ++i)
      if (emits[i]) Finish(*owners[i], "", st);
  }
  size_t next_choice = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    Running& r = *owners[i];
    const auto n = int32_t(items[i].tokens.size());
    const size_t again = std::min<size_t>(size_t(n), r.computed - std::min(r.computed, size_t(r.seq.length())));
    r.seq.Advance(n);
    if (cache_) OfferPrefix(r);
    recomputed_tokens_ += again;
    if (r.prefilling()) {
      r.fed += size_t(n);
      prompt_tokens_ += uint64_t(n) - again;
      if (!r.prefilling() && r.resumed) {
        r.resumed = false;  // its next token was sampled before the preemption
        continue;
      }
    }
    if (emits[i] && st.ok()) Emit(r, choices_[next_choice++]);
  }
  for (Running* r : owners)
    if (!r->done) Settle(*r);
}

size_t Scheduler::StepBytes(const Running& r, size_t tokens) const {
  return std::max(r.footprint->BytesAt(r.seq.length() + int(tokens)), r.seq.StepLeaseBound(int64_t(tokens)));
}

// The next step is a decode step, a recomputed token (one per step where the prompt went whole) or a
// prompt chunk of at most max_batch_tokens.
void Scheduler::Settle(Running& r) {
  size_t next = 1, prefill = 0;
  if (r.prefilling()) {
    prefill = r.footprint->BytesAt(int(r.prefill_to));
    if (!r.req.kv->NeedsWholePrompt()) next = std::min(r.prefill_to - r.fed, size_t(opt_.max_batch_tokens));
  }
  pool_.Settle(r.id, std::max(prefill, StepBytes(r, next)));
}

// Mirrors Generate's order of checks, so that a request gives the same tokens batched or alone.
void Scheduler::Emit(Running& r, const TokenChoice& c) {
  const int32_t id = c.id;
  if (!r.req.ignore_eos && std::find(eos_.begin(), eos_.end(), id) != eos_.end()) {
    Finish(r, "stop", Status::Ok());
    return;
  }
  r.history.push_back(id);
  ++r.generated;
  ++generated_tokens_;
  TokenEvent ev;
  ev.id = id;
  ev.time = std::chrono::steady_clock::now();
  ev.logprob = c.logprob;
  ev.top = c.top;
  if (r.req.on_token && !r.req.on_token(ev)) {
    Finish(r, "stop", Status::Ok());
    return;
  }
  if (r.generated >= r.req.max_tokens || r.seq.length() + 1 > opt_.context) {
    Finish(r, "length", Status::Ok());
    return;
  }
  r.next = id;
}

void Scheduler::Finish(Running& r, const std::string& reason, const Status& error) {
  if (r.done) return;
  r.done = true;
  r.finish_reason = reason;
  r.finish_error = error;
}

void Scheduler::Notify(std::unique_ptr<Running> r) {
  auto on_finish = std::move(r->req.on_finish);
  const std::string reason = std::move(r->finish_reason);
  const Status error = std::move(r->finish_error);
  r.reset();  // its policies return their pages before the client hears
  if (on_finish) on_finish(reason, error);
}

}  // namespace atp
