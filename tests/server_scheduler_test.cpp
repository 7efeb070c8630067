// The scheduler and KV pool without HTTP: batching gives each request exactly what engine Generate
// gives it alone, admission keeps to the KV budget, and Submit refuses what cannot be served.
#include <atomic>
#include <future>

#include <gtest/gtest.h>

#include "engine/generate.h"
#include "engine/scheduler.h"
#include "server_fixture.h"

namespace atp::server_test {
namespace {

TEST(KvPool, ChargesTheLargerOfReservationAndUse) {
  KvPool pool(10 * 4096, 4096);
  EXPECT_TRUE(pool.Fits(10 * 4096));
  EXPECT_FALSE(pool.Fits(10 * 4096 + 1));
  EXPECT_TRUE(pool.TryReserve(1, 4 * 4096));       // 4 pages
  EXPECT_TRUE(pool.TryReserve(2, 3 * 4096 + 1));   // rounds up to 4
  EXPECT_FALSE(pool.TryReserve(3, 3 * 4096));      // 8 + 3 > 10
  EXPECT_EQ(pool.usage().charged_bytes, 8u * 4096);
  pool.Update(1, 100);                             // under its reservation: still 4 pages
  EXPECT_EQ(pool.usage().charged_bytes, 8u * 4096);
  EXPECT_EQ(pool.usage().used_bytes, 100u);
  pool.Update(1, 7 * 4096);                        // outgrew the estimate: charged what it holds
  EXPECT_EQ(pool.usage().charged_bytes, 11u * 4096);
  EXPECT_FALSE(pool.TryReserve(3, 1));             // over budget: nobody else gets in
  pool.Release(1);
  EXPECT_EQ(pool.usage().charged_bytes, 4u * 4096);
  EXPECT_EQ(pool.usage().used_bytes, 0u);
  EXPECT_TRUE(pool.TryReserve(3, 6 * 4096));
  EXPECT_EQ(pool.usage().sequences, 2u);
}

TEST(KvFootprint, DenseIsExactAndLinear) {
  ATP_REQUIRE_REF_MODEL();
  auto kv = ParseKvPolicy("dense");
  ASSERT_TRUE(kv.ok());
  const LlamaModel& m = *Ref().model;
  const size_t per_token = size_t(m.config().num_layers) * 2 * size_t(m.config().kv_dim()) * sizeof(float);
  const KvFootprint f = KvFootprint::Measure(m, **kv, 512);
  for (int len : {64, 100, 128, 500, 512, 1000}) EXPECT_EQ(f.BytesAt(len), per_token * size_t(len)) << len;
  auto half = ParseKvPolicy("dense:dtype=bf16");
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(KvFootprint::Measure(m, **half, 256).BytesAt(200), per_token * 200 / 2);
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
    const size_t len = 2 + size_t(i * 7) % (ids.size() - 2);
    out.emplace_back(ids.begin() + long(i % 3), ids.begin() + long(i % 3 + len));
  }
  return out;
}

struct Outcome {
  std::vector<int32_t> tokens;
  std::string finish;
  Status error;
};

// Submits all requests at once and waits for every one to finish.
std::vector<Outcome> RunBatched(Scheduler& sched, const std::vector<SeqRequest>& reqs) {
  std::vector<Outcome> out(reqs.size());
  std::vector<std::promise<void>> done(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    SeqRequest r = reqs[i];
    r.on_token = [&out, i](const TokenEvent& ev) {
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
    GenerateOptions g;
    g.sampling = r.sampling;
    g.max_tokens = r.max_tokens;
    auto res = Generate(m, tok, *kv, r.prompt, g, nullptr);  // before the batch: one model user at a time
    ASSERT_TRUE(res.ok()) << res.status().ToString();
    alone.push_back(std::move(res).value());
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

TEST(Scheduler, KvBudgetBoundsTheRunningBatch) {
  ATP_REQUIRE_REF_MODEL();
  LlamaModel& m = *Ref().model;
  std::shared_ptr<const KvPolicyFactory> kv = ParseKvPolicy("dense").value();
  const size_t per_token = size_t(m.config().num_layers) * 2 * size_t(m.config().kv_dim()) * sizeof(float);
  SchedulerOptions opt;
  opt.kv_page = 4096;
  opt.kv_memory = 2 * 100 * per_token + 4096;  // two sequences of 100 tokens
  Scheduler sched(m, Ref().tok->eos_ids(), opt);
  std::atomic<size_t> most{0};
  std::atomic<bool> over{false};
  std::vector<SeqRequest> reqs(6);
  for (auto& r : reqs) {
    r.prompt = Prompts(1)[0];
    r.prompt.resize(20, 100);
    r.max_tokens = 80;
    r.sampling.temperature = 0;
    r.kv = kv;
  }
  std::vector<Outcome> out(reqs.size());
  std::vector<std::promise<void>> done(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].on_token = [&](const TokenEvent&) {
      const auto s = sched.stats();
      most = std::max(most.load(), s.running);
      if (s.kv.charged_bytes > s.kv.capacity_bytes || s.kv.used_bytes > s.kv.capacity_bytes) over = true;
      return true;
    };
    reqs[i].on_finish = [&, i](const std::string& reason, const Status&) {
      out[i].finish = reason;
      done[i].set_value();
    };
    ASSERT_TRUE(sched.Submit(reqs[i]).ok());
  }
  for (auto& d : done) d.get_future().wait();
  EXPECT_EQ(most.load(), 2u);
  EXPECT_FALSE(over.load());
  for (auto& o : out) EXPECT_TRUE(o.finish == "length" || o.finish == "stop") << o.finish;
  // The pool is released right after the last on_finish.
  EXPECT_TRUE(WaitFor([&] { return sched.stats().kv.charged_bytes == 0; }, 5));
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
