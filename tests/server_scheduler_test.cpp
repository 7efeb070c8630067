// The scheduler and KV pool without HTTP: batching gives each request exactly what engine Generate
// gives it alone, admission keeps to the KV budget, and Submit refuses what cannot be served.
#include <atomic>
#include <filesystem>
#include <functional>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <random>

#include <gtest/gtest.h>

#include "engine/generate.h"
#include "engine/scheduler.h"
#include "test_util.h"
#include <nlohmann/json.hpp>
#include "server_fixture.h"

namespace atp::server_test {
namespace {

// The budget is the store's leases plus each sequence's reservation beyond the pages it holds: a page
// is charged once, as the store counts it, whether a sequence reserved it or not (the prefix cache's).
TEST(KvPool, ChargesTheStoresLeasesAndReservationsBeyondThem) {
  PageStore store;
  KvPool pool(10 * 4096, 4096, store);
  EXPECT_TRUE(pool.Fits(10 * 4096));
  EXPECT_FALSE(pool.Fits(10 * 4096 + 1));
  EXPECT_TRUE(pool.TryReserve(1, 4 * 4096));       // 4 pages
  EXPECT_TRUE(pool.TryReserve(2, 3 * 4096 + 1));   // 7 pages and a byte: 8 charged
  EXPECT_FALSE(pool.TryReserve(3, 3 * 4096));      // 8 + 3 > 10
  EXPECT_EQ(pool.usage().sequences, 2u);           // a refused new id leaves no entry
  EXPECT_EQ(pool.usage().pages_used(), 8u);
  EXPECT_EQ(pool.usage().pages(), 10u);
  uint8_t* a = store.TryLease(3 * 4096).value();  // sequence 1 leases within its reservation
  pool.Update(1, 3 * 4096, 3 * 4096);
  EXPECT_EQ(pool.usage().charged_bytes, 8u * 4096);
  EXPECT_EQ(pool.usage().used_bytes, 3u * 4096);
  uint8_t* cached = store.TryLease(4096).value();  // a page nobody reserved: charged as the store holds it
  EXPECT_EQ(pool.usage().pages_used(), 9u);
  EXPECT_FALSE(pool.TryReserve(3, 2 * 4096));
  store.Return(cached, 4096);
  uint8_t* b = store.TryLease(4 * 4096).value();  // outgrew the estimate: charged what it holds
  pool.Update(1, 7 * 4096, 7 * 4096);
  EXPECT_EQ(pool.usage().pages_used(), 11u);
  EXPECT_FALSE(pool.TryReserve(3, 1));             // over budget: nobody else gets in
  EXPECT_TRUE(pool.TryReserve(1, 5 * 4096));       // within what it holds already: no growth
  pool.Release(1);
  store.Return(a, 3 * 4096);
  store.Return(b, 4 * 4096);
  EXPECT_EQ(pool.usage().pages_used(), 4u);
  EXPECT_EQ(pool.usage().used_bytes, 0u);
  // A device policy's buffers lease no pages: its Bytes() are charged beside the store.
  pool.Update(2, 5 * 4096, 0);
  EXPECT_EQ(pool.usage().pages_used(), 5u);
  EXPECT_EQ(pool.usage().used_bytes, 5u * 4096);
  pool.Release(2);
  EXPECT_EQ(pool.usage().charged_bytes, 0u);
}

// A reservation grows step by step while pages are free, never shrinks but by Settle, and keep_free holds
// pages back.
TEST(KvPool, ReservationsGrowWhilePagesAreFree) {
  PageStore store;
  KvPool pool(10 * 4096, 4096, store);
  EXPECT_TRUE(pool.TryReserve(1, 2 * 4096));
  EXPECT_TRUE(pool.TryReserve(1, 5 * 4096));       // grows to 5
  EXPECT_TRUE(pool.TryReserve(1, 3 * 4096));       // never shrinks
  EXPECT_EQ(pool.usage().pages_used(), 5u);
  EXPECT_FALSE(pool.TryReserve(2, 4 * 4096, 2));   // 5 + 4 leaves 1 free, 2 asked
  EXPECT_TRUE(pool.TryReserve(2, 3 * 4096, 2));    // leaves 2
  EXPECT_FALSE(pool.TryReserve(1, 8 * 4096));      // 8 + 3 > 10: unchanged
  EXPECT_EQ(pool.usage().pages_used(), 8u);
  EXPECT_TRUE(pool.TryReserve(1, 7 * 4096));
  EXPECT_EQ(pool.usage().pages_used(), 10u);
  // After a step its transient goes: Settle lowers a reservation, and never raises one past the budget.
  pool.Settle(1, 4 * 4096);
  EXPECT_EQ(pool.usage().pages_used(), 7u);
  pool.Settle(1, 9 * 4096);
  EXPECT_EQ(pool.usage().pages_used(), 7u);
  pool.Settle(99, 4096);  // unknown: ignored
  EXPECT_EQ(pool.usage().sequences, 2u);
}

// Dense rows lease whole pages of 64 rows per layer, K and V: the footprint is that staircase, measured
// and, past the measured lengths, continued.
TEST(KvFootprint, DenseIsWholePagesOfRows) {
  ATP_REQUIRE_REF_MODEL();
  auto kv = ParseKvPolicy("dense");
  ASSERT_TRUE(kv.ok());
  const LlamaModel& m = *Ref().model;
  const size_t per_token = size_t(m.config().num_layers) * 2 * size_t(m.config().kv_dim()) * sizeof(float);
  const auto paged = [](int len) { return size_t((len + 63) / 64 * 64); };
  const KvFootprint f = KvFootprint::Measure(m, **kv, 512);
  for (int len : {1, 64, 65, 100, 128, 500, 512, 513, 1000, 1024, 1025})
    EXPECT_EQ(f.BytesAt(len), per_token * paged(len)) << len;
  auto half = ParseKvPolicy("dense:dtype=bf16");
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(KvFootprint::Measure(m, **half, 256).BytesAt(200), per_token * paged(200) / 2);
}

// Prompts of different lengths cut from one text, so that prefill chunks and decode steps of
// different sequences share forward passes.
std::vector<std::vector<int32_t>> Prompts(int n) {
  const std::string text =
      "In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness "
      "was upon the face of the deep. The jury further said in term-end presentments that the City Executive "
      "Committee, which had over-all charge of the election, deserves the praise and thanks of the City of Atlanta.";
  const std::vector<int32_t> ids = Ref().tok->Encode(text, true);
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < n; ++i) {
    // At most ids.size() - 3 tokens from offset i % 3 <= 2: the slice stays inside ids for any n.
    const size_t len = 2 + size_t(i * 7) % (ids.size() - 4);
    out.emplace_back(ids.begin() + long(i % 3), ids.begin() + long(i % 3 + len));
  }
  return out;
}

struct Outcome {
  std::vector<int32_t> tokens;
  std::string finish;
  Status error;
};

// Submits all requests at once and waits for every one to finish; `observe` runs at every token.
std::vector<Outcome> RunBatched(Scheduler& sched, const std::vector<SeqRequest>& reqs,
                                const std::function<void()>& observe = {}) {
  std::vector<Outcome> out(reqs.size());
  std::vector<std::promise<void>> done(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    SeqRequest r = reqs[i];
    r.on_token = [&out, &observe, i](const TokenEvent& ev) {
      if (observe) observe();
      out[i].tokens.push_back(ev.id);
      return true;
    };
    r.on_finish = [&out, &done, i](const std::string& reason, const Status& st) {
      out[i].finish = reason;
      out[i].error = st;
      done[i].set_value();
    };
    EXPECT_TRUE(sched.Submit(std::move(r)).ok());
  }
  for (auto& d : done) d.get_future().wait();
  return out;
}

// What engine Generate gives request r alone: what every scheduler test compares with.
GenerateResult Alone(const SeqRequest& r) {
  GenerateOptions g;
  g.sampling = r.sampling;
  g.max_tokens = r.max_tokens;
  auto res = Generate(*Ref().model, *Ref().tok, *r.kv, r.prompt, g, nullptr);
  EXPECT_TRUE(res.ok()) << res.status().ToString();
  return res.ok() ? std::move(res).value() : GenerateResult{};
}

void ExpectBatchedEqualsAlone(float temperature, const std::string& policy = "dense") {
  LlamaModel& m = *Ref().model;
  const Tokenizer& tok = *Ref().tok;
  std::shared_ptr<const KvPolicyFactory> kv = ParseKvPolicy(policy).value();
  const auto prompts = Prompts(16);
  std::vector<SeqRequest> reqs;
  std::vector<GenerateResult> alone;
  for (size_t i = 0; i < prompts.size(); ++i) {
    SeqRequest r;
    r.prompt = prompts[i];
    r.sampling = SamplingParams{temperature, 40, 0.95f, 0.0f, 1.0f, 1000 + i};
    r.max_tokens = 8 + int(i * 5) % 33;
    r.kv = kv;
    reqs.push_back(r);
    alone.push_back(Alone(r));  // before the batch: one model user at a time
  }
  SchedulerOptions opt;
  opt.max_batch_tokens = 40;  // small: long prompts are prefilled in chunks, mixed with decode steps
  Scheduler sched(m, tok.eos_ids(), opt);
  const auto batched = RunBatched(sched, reqs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(batched[i].error.ok()) << batched[i].error.ToString();
    EXPECT_EQ(batched[i].tokens, alone[i].token_ids) << "request " << i << ", prompt of " << prompts[i].size() << " tokens";
    EXPECT_EQ(batched[i].finish, alone[i].finish_reason) << "request " << i;
  }
  EXPECT_LT(sched.stats().forward_passes, 40u * 16u) << "requests were not batched";
}

TEST(Scheduler, BatchedGreedyEqualsGenerateAlone) {
  ATP_REQUIRE_REF_MODEL();
  ExpectBatchedEqualsAlone(0.0f);
}

TEST(Scheduler, BatchedSeededSamplingEqualsGenerateAlone) {
  ATP_REQUIRE_REF_MODEL();
  ExpectBatchedEqualsAlone(0.8f);
}

// h2o and snapkv evict by the attention of each call's queries: a prompt split into chunks by the
// batch budget (or by what else runs) used to end with other rows kept, hence other tokens. Their
// prompts now go in one piece, and the output is what the request gets alone.
TEST(Scheduler, AttentionEvictionGivesTheSameTokensBatchedAsAlone) {
  ATP_REQUIRE_REF_MODEL();
  ExpectBatchedEqualsAlone(0.0f, "snapkv:budget=12,window=4");
  ExpectBatchedEqualsAlone(0.0f, "h2o:budget=12,recent=4");
}

// Requests whose combined worst case is several times the pool: admitted by what their prompts hold,
// preempted when the pages run out, recomputed, and each still gets the tokens it gets alone. The pool
// is never charged beyond its budget, the page store never leases more than it between steps (on_token
// runs between forward passes) nor within one (its peak: each step reserved its bound), and every page
// comes back.
// Prompts of 100 to 187 tokens cut from Prompts' text run together: several 64-token pages, and prompt
// chunks that lease rows an update then drops.
std::vector<std::vector<int32_t>> LongPrompts(int n) {
  std::vector<int32_t> text;
  for (const auto& p : Prompts(40)) text.insert(text.end(), p.begin(), p.end());
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < n; ++i) out.emplace_back(text.begin() + i % 5, text.begin() + i % 5 + 100 + (i * 29) % 88);
  return out;
}

void ExpectPreemptionKeepsTokens(const std::vector<std::string>& policies, int n, size_t kv_memory,
                                 size_t min_preemptions, bool prefix_caching = false, bool long_prompts = false) {
  LlamaModel& m = *Ref().model;
  const Tokenizer& tok = *Ref().tok;
  const auto prompts = long_prompts ? LongPrompts(n) : Prompts(n);
  std::vector<SeqRequest> reqs;
  std::vector<GenerateResult> alone;
  for (int i = 0; i < n; ++i) {
    SeqRequest r;
    r.prompt = prompts[size_t(i)];
    r.sampling = SamplingParams{i % 2 ? 0.8f : 0.0f, 40, 0.95f, 0.0f, 1.0f, uint64_t(77 + i)};
    r.max_tokens = 24 + (i * 7) % 17;
    r.kv = ParseKvPolicy(policies[size_t(i) % policies.size()]).value();
    alone.push_back(Alone(r));
    reqs.push_back(std::move(r));
  }
  SchedulerOptions opt;
  opt.kv_page = 4096;
  opt.kv_memory = kv_memory;
  opt.max_seqs = n;
  opt.max_queue = n;
  opt.max_batch_tokens = 64;
  opt.prefix_caching = prefix_caching;
  Scheduler sched(m, tok.eos_ids(), opt);
  size_t worst = 0;  // what admission by worst case would have reserved
  std::map<std::string, KvFootprint> footprints;
  for (auto& r : reqs) {
    auto it = footprints.try_emplace(r.kv->Describe(), KvFootprint::Measure(m, *r.kv, 256)).first;
    worst += it->second.BytesAt(int(r.prompt.size()) + r.max_tokens);
  }
  ASSERT_GT(worst, 2 * kv_memory) << "the test must overcommit the pool";
  std::atomic<bool> over{false};
  std::atomic<size_t> most{0}, paged{0}, most_cached{0};
  const auto batched = RunBatched(sched, reqs, [&] {
    const auto s = sched.stats();
    most = std::max(most.load(), s.running);
    most_cached = std::max(most_cached.load(), s.prefix_cache_bytes);
    paged = std::max(paged.load(), s.kv_page_bytes);
    if (s.kv.charged_bytes > s.kv.capacity_bytes || s.kv_page_bytes > s.kv.capacity_bytes) over = true;
  });
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(batched[size_t(i)].error.ok()) << batched[size_t(i)].error.ToString();
    EXPECT_EQ(batched[size_t(i)].tokens, alone[size_t(i)].token_ids) << "request " << i << " under " << reqs[size_t(i)].kv->Describe();
    EXPECT_EQ(batched[size_t(i)].finish, alone[size_t(i)].finish_reason) << "request " << i;
  }
  const auto s = sched.stats();
  EXPECT_FALSE(over.load());
  EXPECT_GE(s.preemptions, min_preemptions);
  EXPECT_GT(s.recomputed_tokens, 0u);
  EXPECT_GT(most.load(), 1u) << "nothing ran side by side";
  // What is left charged and leased is the prefix cache's (none without it).
  const auto cached = [&] { return sched.stats().prefix_cache_bytes; };
  EXPECT_TRUE(WaitFor([&] {
    const auto now = sched.stats();
    return now.kv.charged_bytes == (now.prefix_cache_bytes + opt.kv_page - 1) / opt.kv_page * opt.kv_page &&
           now.preempted == 0;
  }, 5));
  // The rows lived in the engine's page store, and every page came back with its sequence (finished
  // or preempted), or stayed in the cache.
  EXPECT_GT(paged.load(), 0u);
  EXPECT_GT(s.kv_page_peak_bytes, 0u);
  // The store is bounded by the budget: a refused lease would have ended a request with its error
  // (checked above), and its peak, within steps too, stays within the bound.
  EXPECT_EQ(s.kv_page_capacity_bytes, s.kv.capacity_bytes);
  EXPECT_LE(s.kv_page_peak_bytes, s.kv_page_capacity_bytes) << "a step leased past the budget";
  std::printf("%zu-byte budget: most leased between steps %zu, within a step %zu bytes; %llu preemptions\n",
              s.kv.capacity_bytes, paged.load(), s.kv_page_peak_bytes, (unsigned long long)s.preemptions);
  EXPECT_TRUE(WaitFor([&] { return sched.stats().kv_page_bytes == cached(); }, 5))
      << sched.stats().kv_page_bytes << " bytes still leased, " << cached() << " of them cached";
  if (prefix_caching) {
    EXPECT_GT(s.prefix_queried_tokens, 0u);
    EXPECT_GT(most_cached.load(), 0u) << "the cache never held a block";
  }
}

TEST(Scheduler, PreemptedSequencesGetTheirTokensAlone) {
  ATP_REQUIRE_REF_MODEL();
  const LlamaModel& m = *Ref().model;
  const size_t per_token = size_t(m.config().num_layers) * 2 * size_t(m.config().kv_dim()) * sizeof(float);
  // Room for 150 tokens: the prompts (2-60 tokens) are admitted, and their growth preempts the youngest.
  ExpectPreemptionKeepsTokens({"dense"}, 8, 150 * per_token, 1);
}

// The cache alone: whole blocks only, found through their parents (a changed token ends the match),
// keyed by the policy, evicted least recently used leaf first, and a sequence continuing from adopted
// blocks gives the logits of one that ran them (within float noise: the rows came from another chunk).
TEST(PrefixCache, AdoptsWholeMatchingBlocksAndEvictsLeastRecentlyUsedLeaves) {
  ATP_REQUIRE_REF_MODEL();
  LlamaModel& m = *Ref().model;
  std::shared_ptr<const KvPolicyFactory> kv = ParseKvPolicy("dense").value();
  const std::string key = kv->Describe();
  std::vector<int32_t> a;
  for (const auto& p : Prompts(40)) a.insert(a.end(), p.begin(), p.end());
  a.resize(200);
  std::vector<int32_t> b(a.begin(), a.begin() + 150);  // shares blocks 0 and 1, not 2
  b[140] = 7;
  std::vector<int32_t> c(a.rbegin(), a.rbegin() + 130);  // nothing in common
  PageStore store;
  PrefixCache cache(store);
  Sequence sa(m, *kv, &store);
  ASSERT_TRUE(RunChunk(m, sa, a, false, nullptr).ok());
  ASSERT_TRUE(cache.Offer(key, a, sa, size_t(1) << 30));
  EXPECT_EQ(cache.blocks(), 3u);  // 200 tokens: three whole blocks

  std::vector<float> adopted, computed;
  Sequence sb(m, *kv, &store);
  EXPECT_EQ(cache.Attach("mx:fmt=fp8_e4m3", b, 10, sb), 0) << "another policy's blocks";
  EXPECT_EQ(cache.Attach(key, b, 10, sb), 128);
  EXPECT_EQ(sb.length(), 128);
  ASSERT_TRUE(RunChunk(m, sb, std::span<const int32_t>(b).subspan(128), false, &adopted).ok());
  Sequence fresh(m, *kv, &store);
  ASSERT_TRUE(RunChunk(m, fresh, b, false, &computed).ok());
  ASSERT_EQ(adopted.size(), computed.size());
  float worst = 0;
  for (size_t i = 0; i < adopted.size(); ++i) worst = std::max(worst, std::abs(adopted[i] - computed[i]));
  EXPECT_LT(worst, 1e-3f) << "logits after adopted blocks";
  Sequence capped(m, *kv, &store);
  EXPECT_EQ(cache.Attach(key, a, 1, capped), 64) << "at most max_blocks";

  // Block sizes are equal here: evicting one block's bytes takes the least recently used leaf, a's
  // third block (b and capped touched the first two since); c's blocks are newer.
  Sequence sc(m, *kv, &store);
  ASSERT_TRUE(RunChunk(m, sc, c, false, nullptr).ok());
  ASSERT_TRUE(cache.Offer(key, c, sc, size_t(1) << 30));
  EXPECT_EQ(cache.blocks(), 5u);
  const size_t block = cache.bytes() / 5;
  cache.Shrink(cache.bytes() - block);
  EXPECT_EQ(cache.blocks(), 4u);
  Sequence again(m, *kv, &store);
  EXPECT_EQ(cache.Attach(key, a, 10, again), 128) << "a's third block went first";
  // A full budget: a new block replaces the least recently used leaf (c's second block), never the
  // chain it extends.
  std::vector<int32_t> d = a;
  d[150] = 9;
  Sequence sd(m, *kv, &store);
  ASSERT_TRUE(RunChunk(m, sd, d, false, nullptr).ok());
  EXPECT_TRUE(cache.Offer(key, d, sd, cache.bytes()));
  EXPECT_EQ(cache.blocks(), 4u);
  Sequence sc2(m, *kv, &store), sd2(m, *kv, &store);
  EXPECT_EQ(cache.Attach(key, c, 10, sc2), 64);
  EXPECT_EQ(cache.Attach(key, d, 10, sd2), 192);
  // Less than a block of room: nothing is cached, nothing evicted.
  std::vector<int32_t> e = a;
  e[190] = 11;
  Sequence se(m, *kv, &store);
  ASSERT_TRUE(RunChunk(m, se, e, false, nullptr).ok());
  EXPECT_TRUE(cache.Offer(key, e, se, block - 1));
  EXPECT_EQ(cache.blocks(), 4u);
  cache.Shrink(0);
  EXPECT_EQ(cache.blocks(), 0u);
  EXPECT_EQ(cache.bytes(), 0u);
}

// Prefix caching in a pool too small for everyone: the cache lives in the free room only and gives it
// back before a request waits or a sequence is preempted, and the tokens stay what each gets alone.
TEST(Scheduler, PrefixCacheGivesWayInAnOvercommittedPool) {
  ATP_REQUIRE_REF_MODEL();
  const LlamaModel& m = *Ref().model;
  const size_t per_token = size_t(m.config().num_layers) * 2 * size_t(m.config().kv_dim()) * sizeof(float);
  ExpectPreemptionKeepsTokens({"dense"}, 8, 150 * per_token, 1, true);
}

// Prompts sharing their first two blocks (128 tokens): later requests adopt them from the cache (counted
// as hits, not run), each request still gets the tokens engine Generate gives it alone, under a policy
// that shares (dense, MX) and one that does not (KIVI, whose groups are compressed together).
TEST(Scheduler, PrefixCachingSkipsSharedBlocksAndKeepsTokens) {
  ATP_REQUIRE_REF_MODEL();
  LlamaModel& m = *Ref().model;
  const Tokenizer& tok = *Ref().tok;
  std::vector<int32_t> base;
  for (const auto& p : Prompts(40)) base.insert(base.end(), p.begin(), p.end());
  ASSERT_GE(base.size(), 200u);
  for (const std::string policy : {"dense", "mx:fmt=fp8_e4m3", "kivi:bits=4,group=16,residual=16"}) {
    SCOPED_TRACE(policy);
    std::shared_ptr<const KvPolicyFactory> kv = ParseKvPolicy(policy).value();
    std::vector<SeqRequest> reqs;
    std::vector<GenerateResult> alone;
    for (int i = 0; i < 5; ++i) {
      SeqRequest r;
      r.prompt.assign(base.begin(), base.begin() + 140 + 11 * i);
      r.prompt[130] = int32_t(5 + i);  // tails differ after the shared blocks
      r.sampling = SamplingParams{i % 2 ? 0.8f : 0.0f, 40, 0.95f, 0.0f, 1.0f, uint64_t(5 + i)};
      r.max_tokens = 12;
      r.kv = kv;
      alone.push_back(Alone(r));
      reqs.push_back(std::move(r));
    }
    SchedulerOptions opt;
    opt.max_batch_tokens = 48;
    opt.prefix_caching = true;
    Scheduler sched(m, tok.eos_ids(), opt);
    // The first alone (it fills the cache), then the rest together.
    auto first = RunBatched(sched, {reqs[0]});
    auto rest = RunBatched(sched, std::vector<SeqRequest>(reqs.begin() + 1, reqs.end()));
    rest.insert(rest.begin(), first[0]);
    for (size_t i = 0; i < reqs.size(); ++i) {
      ASSERT_TRUE(rest[i].error.ok()) << rest[i].error.ToString();
      EXPECT_EQ(rest[i].tokens, alone[i].token_ids) << "request " << i;
    }
    const auto s = sched.stats();
    size_t prompts = 0;
    for (const auto& r : reqs) prompts += r.prompt.size();
    EXPECT_EQ(s.prompt_tokens, prompts) << "every prompt token counts once, run or adopted";
    EXPECT_EQ(s.prefix_queried_tokens, prompts);
    if (policy.starts_with("kivi")) {
      EXPECT_EQ(s.prefix_hit_tokens, 0u);
      EXPECT_EQ(s.prefix_cache_blocks, 0u);
      continue;
    }
    EXPECT_EQ(s.prefix_hit_tokens, 4u * 128u) << "requests 1-4 adopt the two shared blocks";
    // The two shared blocks, and request 4's third: the only sequence to reach 192 tokens (184 + 12 - 1).
    EXPECT_EQ(s.prefix_cache_blocks, 3u);
    EXPECT_TRUE(WaitFor([&] { return sched.stats().kv_page_bytes == sched.stats().prefix_cache_bytes; }, 5))
        << "pages leased beyond what the cache holds";
  }
}

// The check: 64 sequences of mixed policies (chunk-invariant ones, and h2o/snapkv whose prompts
// go whole and whose recomputed tokens go one per step) in a pool a fraction of their worst case.
TEST(Scheduler, SixtyFourMixedSequencesInAnOvercommittedPool) {
  ATP_REQUIRE_REF_MODEL();
  const LlamaModel& m = *Ref().model;
  const size_t per_token = size_t(m.config().num_layers) * 2 * size_t(m.config().kv_dim()) * sizeof(float);
  ExpectPreemptionKeepsTokens({"dense", "dense:dtype=bf16", "kivi:bits=4,group=16,residual=16",
                               "atp:block=16,rank=4,window=16", "h2o:budget=24,recent=8", "mx:fmt=fp8_e4m3"},
                              64, 6 * 64 * per_token, 4);
}

// Policies whose steps hold more than their footprint after them (a prompt chunk's rows before
// streaming's window slides or h2o evicts, an ATP block's exact rows while its principal rows form,
// KIVI's rows before they are grouped), long prompts in 64-token chunks, a pool a fraction of their
// worst case: the store, bounded by the budget, never refuses a lease (a refusal would end a request
// with its error) and its peak within steps stays within the bound, with tokens as alone.
TEST(Scheduler, StepTransientsStayWithinTheBoundedStore) {
  ATP_REQUIRE_REF_MODEL();
  const LlamaModel& m = *Ref().model;
  const size_t per_token = size_t(m.config().num_layers) * 2 * size_t(m.config().kv_dim()) * sizeof(float);
  ExpectPreemptionKeepsTokens({"streaming:budget=16", "h2o:budget=16,recent=4", "atp:block=16,rank=4,window=16",
                               "kivi:bits=2,group=16,residual=16"},
                              16, 8 * 64 * per_token, 1, false, true);
}

// Capacity is the bytes ratio: in a fixed pool, as many 4k-token sequences run at once under a policy,
// relative to dense f32, as the inverse of its bytes per sequence at that length (within 10%: pages, the
// admission watermark and the footprint estimate may each round against a policy). The bytes are those
// of a real 4k-token sequence fed in the scheduler's chunks, not the scheduler's estimate. The reference
// model with its position limit raised to 8k (RoPE needs no table); the run stops after the first steps
// that follow the last submission, once admission alone has decided how many run.
TEST(Scheduler, SequencesRunningAtOnceFollowTheBytesRatio) {
  ATP_REQUIRE_REF_MODEL();
  testing::TempDir dir("capacity");
  for (const char* f : {"model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    std::filesystem::create_symlink(kRefModel + "/" + f, dir.path() + "/" + f);
  {
    std::ifstream in(kRefModel + "/config.json");
    nlohmann::json cfg = nlohmann::json::parse(in);
    cfg["max_position_embeddings"] = 8192;
    std::ofstream(dir.path() + "/config.json") << cfg.dump();
  }
  auto loaded = LlamaModel::Load(dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  LlamaModel& m = **loaded;
  constexpr int kLen = 4096, kChunk = 512;
  std::vector<int32_t> prompt(kLen);
  std::mt19937 rng(5);
  for (auto& t : prompt) t = int32_t(rng() % 4000);
  struct Row {
    std::string policy;
    size_t bytes = 0;    // of one real sequence of kLen tokens
    size_t running = 0;  // at once in the pool
  };
  std::vector<Row> rows = {{"dense"}, {"mx:fmt=fp8_e4m3"}, {"kivi:bits=2"}, {"atp:block=64,rank=16,window=64"}};
  for (Row& row : rows) {
    std::shared_ptr<const KvPolicyFactory> kv = ParseKvPolicy(row.policy).value();
    {
      Sequence seq(m, *kv);
      std::vector<float> logits;
      ASSERT_TRUE(RunChunk(m, seq, prompt, false, &logits).ok());  // Update makes the chunking irrelevant
      row.bytes = seq.kv_bytes();
    }
    SchedulerOptions opt;
    opt.context = 8192;
    opt.kv_page = 16384;
    opt.kv_memory = 16 * rows[0].bytes;  // 16 dense sequences
    opt.max_batch_tokens = kChunk;
    opt.max_seqs = opt.max_queue = 512;
    Scheduler sched(m, {}, opt);
    const int n = int(opt.kv_memory / row.bytes * 5 / 4) + 4;  // more than fit
    for (int i = 0; i < n; ++i) {
      SeqRequest r;
      r.prompt = prompt;
      r.max_tokens = 1;
      r.kv = kv;
      ASSERT_TRUE(sched.Submit(std::move(r)).ok());
    }
    // Each loop of the scheduler admits, then steps; a prompt takes 8 steps, so none has finished yet.
    const uint64_t passes = sched.stats().forward_passes;
    ASSERT_TRUE(WaitFor([&] { return sched.stats().forward_passes >= passes + 2; }, 60));
    row.running = sched.stats().running;
    sched.Drain(std::chrono::milliseconds(0));
    EXPECT_LT(row.running, size_t(n)) << row.policy << ": the pool, not the number of requests, must be the limit";
  }
  for (const Row& row : rows) {
    const double want = double(rows[0].bytes) / double(row.bytes);
    const double got = double(row.running) / double(rows[0].running);
    EXPECT_NEAR(got / want, 1.0, 0.10) << row.policy << ": " << row.running << " at once vs " << rows[0].running
                                       << " dense; bytes ratio " << want;
    std::printf("%-34s %9zu bytes/seq  %4zu at once  x%.2f (bytes ratio x%.2f)\n", row.policy.c_str(), row.bytes,
                row.running, got, want);
  }
}

TEST(Scheduler, SubmitRefusesWhatCannotBeServed) {
  ATP_REQUIRE_REF_MODEL();
  LlamaModel& m = *Ref().model;
  std::shared_ptr<const KvPolicyFactory> kv = ParseKvPolicy("dense").value();
  SchedulerOptions opt;
  opt.max_seqs = 1;
  opt.max_queue = 1;
  opt.kv_memory = 8 << 20;
  opt.context = 1024;
  Scheduler sched(m, Ref().tok->eos_ids(), opt);
  SeqRequest r;
  r.prompt = Ref().tok->Encode("The", true);
  r.max_tokens = 1000;  // greedy "The" runs on without an EOS
  r.sampling.temperature = 0;
  r.kv = kv;
  std::promise<std::string> a_done;
  SeqRequest a = r;
  a.on_finish = [&](const std::string& reason, const Status&) { a_done.set_value(reason); };
  auto a_id = sched.Submit(a);
  ASSERT_TRUE(a_id.ok());
  ASSERT_TRUE(WaitFor([&] { return sched.stats().running == 1; }, 10));
  SeqRequest b = r;
  std::promise<std::string> b_done;
  b.on_finish = [&](const std::string& reason, const Status&) { b_done.set_value(reason); };
  auto b_id = sched.Submit(b);
  ASSERT_TRUE(b_id.ok());
  auto c = sched.Submit(r);
  EXPECT_EQ(c.status().code(), Status::Code::kResourceExhausted) << c.status().ToString();

  sched.Cancel(*b_id);  // queued
  sched.Cancel(*a_id);  // running
  EXPECT_EQ(a_done.get_future().get(), "cancelled");
  EXPECT_EQ(b_done.get_future().get(), "cancelled");
  EXPECT_TRUE(WaitFor([&] { return sched.stats().running == 0 && sched.stats().kv.charged_bytes == 0; }, 5));
}

TEST(Scheduler, SubmitRefusesWhatCanNeverFit) {
  ATP_REQUIRE_REF_MODEL();
  SchedulerOptions opt;
  opt.kv_memory = 1 << 20;
  opt.context = 1024;
  Scheduler sched(*Ref().model, Ref().tok->eos_ids(), opt);
  SeqRequest r;
  r.prompt = {Ref().tok->bos_id()};
  r.max_tokens = 1000;  // 1001 tokens of dense f32 KV: about 6 MiB
  r.kv = ParseKvPolicy("dense").value();
  auto big = sched.Submit(r);
  EXPECT_EQ(big.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(big.status().message().find("KV memory"), std::string::npos) << big.status().message();
  r.prompt.assign(1024, Ref().tok->bos_id());  // no room left for a single token
  r.max_tokens = 1;
  EXPECT_EQ(sched.Submit(r).status().code(), Status::Code::kInvalidArgument);
  r.prompt.assign(3, Ref().tok->bos_id());
  r.max_tokens = 0;
  EXPECT_EQ(sched.Submit(r).status().code(), Status::Code::kInvalidArgument);
  // h2o keeps 8 rows (a page of 64 per layer and head) once its prompt has run, but the prompt's one
  // step holds all 200 rows before eviction: four pages, and the pool has two.
  const size_t per_token = size_t(Ref().model->config().num_layers) * 2 * size_t(Ref().model->config().kv_dim()) * sizeof(float);
  SchedulerOptions small = opt;
  small.kv_page = 4096;
  small.kv_memory = 128 * per_token;
  Scheduler tight(*Ref().model, Ref().tok->eos_ids(), small);
  r.prompt.assign(200, Ref().tok->bos_id());
  r.max_tokens = 4;
  r.kv = ParseKvPolicy("h2o:budget=8,recent=4").value();
  auto whole = tight.Submit(r);
  EXPECT_EQ(whole.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(whole.status().message().find("KV memory"), std::string::npos) << whole.status().message();
  r.prompt.resize(100);  // two pages: it fits, and runs
  std::promise<Status> done;
  r.on_finish = [&](const std::string&, const Status& st) { done.set_value(st); };
  ASSERT_TRUE(tight.Submit(r).ok());
  EXPECT_TRUE(done.get_future().get().ok());
}

TEST(Scheduler, DrainCancelsWhatOutlivesTheTimeout) {
  ATP_REQUIRE_REF_MODEL();
  Scheduler sched(*Ref().model, Ref().tok->eos_ids(), SchedulerOptions{});
  SeqRequest r;
  r.prompt = Ref().tok->Encode("The", true);
  r.max_tokens = 1500;
  r.sampling.temperature = 0;
  r.kv = ParseKvPolicy("dense").value();
  std::promise<std::string> done;
  r.on_finish = [&](const std::string& reason, const Status&) { done.set_value(reason); };
  ASSERT_TRUE(sched.Submit(r).ok());
  EXPECT_FALSE(sched.Drain(std::chrono::milliseconds(100)));
  EXPECT_EQ(done.get_future().get(), "cancelled");
  EXPECT_EQ(sched.Submit(r).status().code(), Status::Code::kUnsupported);
}

}  // namespace
}  // namespace atp::server_test
