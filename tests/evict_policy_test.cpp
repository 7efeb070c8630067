// Eviction policies against independent double-precision simulations of their definitions
// (StreamingLLM window, H2O accumulated attention, SnapKV window votes), plus causality, chunk
// handling, budgets at or above the context reproducing dense bit for bit, and bytes by hand: on every
// backend (tests/kv_backend.h; the GPU's prefill within its bf16 tolerance, its decode within 1e-4).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "kv_backend.h"
#include "kv_test_util.h"

namespace atp {
namespace {

using namespace kvtest;

class Evict : public KvOnBackend {};
ATP_KV_BACKENDS(Evict);

TEST_P(Evict, BudgetAtLeastContextEqualsDenseExactly) {
  Inputs in = RandomInputs(90, 1);
  for (std::vector<int> chunks : {std::vector<int>{90}, {30, 1}, {1}}) {
    auto dense = Make("dense");
    const std::vector<float> want = RunChunks(*dense, in, chunks);
    for (std::string spec : {"streaming:budget=90", "streaming:budget=200,sinks=0", "h2o:budget=90", "h2o:budget=128,recent=0",
                             "snapkv:budget=90", "snapkv:budget=128,window=8,pool=1"}) {
      auto p = Make(spec);
      ExpectSame(RunChunks(*p, in, chunks), want, chunks, spec + " first chunk " + std::to_string(chunks[0]));
    }
  }
}

// StreamingLLM: a query at p reads positions < sinks and the newest budget - sinks positions <= p.
std::vector<float> StreamingRef(const Inputs& in, int budget, int sinks) {
  std::vector<float> O(size_t(in.T) * kQd);
  for (int t = 0; t < in.T; ++t) {
    std::vector<int> idx;
    for (int j = 0; j <= t; ++j)
      if (j < sinks || j >= t - (budget - sinks) + 1) idx.push_back(j);
    for (int h = 0; h < kH; ++h)
      AttendRef(&in.Q[size_t(t * kQd + h * kHd)], in.K, in.V, h / (kH / kKV), idx, &O[size_t(t * kQd + h * kHd)]);
  }
  return O;
}

TEST_P(Evict, StreamingMatchesDefinitionAndIsChunkInvariant) {
  Inputs in = RandomInputs(100, 2);
  for (auto [budget, sinks] : {std::pair{20, 4}, {33, 0}, {16, 15}}) {
    const std::string spec = "streaming:budget=" + std::to_string(budget) + ",sinks=" + std::to_string(sinks);
    const std::vector<float> want = StreamingRef(in, budget, sinks);
    auto a = Make(spec), b = Make(spec), c = Make(spec);
    std::vector<float> oa = RunChunks(*a, in, {100}), ob = RunChunks(*b, in, {1}), oc = RunChunks(*c, in, {7, 13, 2});
    // 1e-5: f32 against double over <= 33 rows of N(0,1) data.
    ExpectNear(oa, want, {100}, 1e-5, spec);
    ExpectNear(ob, want, {1}, 1e-5, spec);
    ExpectChunkInvariant(oa, ob, spec);
    ExpectChunkInvariant(oa, oc, spec);
  }
}

// H2O: every query of a chunk reads all retained rows plus the chunk's rows <= its position;
// after each chunk, rows beyond the budget go by lowest accumulated attention (summed over
// queries and the group's heads), never among the `recent` newest; ties evict the older row.
std::vector<float> H2oRef(const Inputs& in, const std::vector<int>& chunks, int budget, int recent) {
  std::vector<float> O(size_t(in.T) * kQd);
  std::vector<std::vector<int>> rows(kKV);
  std::vector<std::map<int, double>> score(kKV);
  int pos = 0;
  size_t c = 0;
  while (pos < in.T) {
    const int n = std::min(chunks[std::min(c++, chunks.size() - 1)], in.T - pos);
    for (int g = 0; g < kKV; ++g)
      for (int i = 0; i < n; ++i) rows[size_t(g)].push_back(pos + i), score[size_t(g)][pos + i] = 0;
    for (int t = pos; t < pos + n; ++t)
      for (int h = 0; h < kH; ++h) {
        const int g = h / (kH / kKV);
        std::vector<int> idx;
        for (int r : rows[size_t(g)])
          if (r <= t) idx.push_back(r);
        std::vector<double> w;
        AttendRef(&in.Q[size_t(t * kQd + h * kHd)], in.K, in.V, g, idx, &O[size_t(t * kQd + h * kHd)], &w);
        for (size_t j = 0; j < idx.size(); ++j) score[size_t(g)][idx[j]] += w[j];
      }
    for (int g = 0; g < kKV; ++g) {
      auto& r = rows[size_t(g)];
      while (int(r.size()) > budget) {
        size_t victim = 0;
        for (size_t j = 1; j + size_t(recent) < r.size(); ++j)
          if (score[size_t(g)][r[j]] < score[size_t(g)][r[victim]]) victim = j;
        r.erase(r.begin() + long(victim));
      }
    }
    pos += n;
  }
  return O;
}

TEST_P(Evict, H2oMatchesReferenceSimulation) {
  Inputs in = RandomInputs(80, 3);
  for (auto [budget, recent, chunks] : {std::tuple{16, 8, std::vector<int>{30, 1}}, {24, 4, std::vector<int>{1}},
                                        {12, 0, std::vector<int>{5, 3}}}) {
    const std::string spec = "h2o:budget=" + std::to_string(budget) + ",recent=" + std::to_string(recent);
    auto p = Make(spec);
    // 1e-4: f32 attention and score sums against double; random scores are far from ties, so both
    // evict the same rows (a different eviction would show as an O(0.1) difference). The GPU's votes
    // are f32 sums of its own vote kernels, not of its bf16 prefill, so the same holds there.
    ExpectNear(RunChunks(*p, in, chunks), H2oRef(in, chunks, budget, recent), chunks, 1e-4,
               spec + " chunk " + std::to_string(chunks[0]));
  }
}

// SnapKV with a prompt chunk of P tokens then decode steps: the prompt's queries attend in full;
// its last w queries vote (attention summed over them and the group's heads) for the older P - w
// rows; votes are max-pooled over `pool` neighbours; the budget - w best rows stay with the window.
std::vector<float> SnapRef(const Inputs& in, int prompt, int budget, int w, int pool) {
  std::vector<float> O(size_t(in.T) * kQd);
  std::vector<std::vector<int>> rows(kKV);
  std::vector<std::vector<double>> votes(kKV, std::vector<double>(size_t(prompt), 0.0));
  for (int t = 0; t < prompt; ++t)
    for (int h = 0; h < kH; ++h) {
      std::vector<int> idx(static_cast<size_t>(t + 1));
      std::iota(idx.begin(), idx.end(), 0);
      std::vector<double> wt;
      AttendRef(&in.Q[size_t(t * kQd + h * kHd)], in.K, in.V, h / (kH / kKV), idx, &O[size_t(t * kQd + h * kHd)], &wt);
      if (t >= prompt - w)
        for (int j = 0; j <= t; ++j) votes[size_t(h / (kH / kKV))][size_t(j)] += wt[size_t(j)];
    }
  const int older = prompt - w;
  for (int g = 0; g < kKV; ++g) {
    std::vector<int> order(static_cast<size_t>(older));
    std::vector<double> pooled(static_cast<size_t>(older));
    for (int j = 0; j < older; ++j) {
      double m = -1;
      for (int i = std::max(0, j - (pool - 1) / 2); i <= std::min(older - 1, j + pool / 2); ++i) m = std::max(m, votes[size_t(g)][size_t(i)]);
      pooled[size_t(j)] = m;
    }
    std::iota(order.begin(), order.end(), 0);
    // best first; on ties the newer row ranks higher (the older one is evicted first)
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return pooled[size_t(a)] > pooled[size_t(b)] || (pooled[size_t(a)] == pooled[size_t(b)] && a > b); });
    std::vector<int> keep(order.begin(), order.begin() + (budget - w));
    std::sort(keep.begin(), keep.end());
    for (int j = older; j < prompt; ++j) keep.push_back(j);
    rows[size_t(g)] = keep;
  }
  for (int t = prompt; t < in.T; ++t) {
    for (int g = 0; g < kKV; ++g) rows[size_t(g)].push_back(t);
    for (int h = 0; h < kH; ++h)
      AttendRef(&in.Q[size_t(t * kQd + h * kHd)], in.K, in.V, h / (kH / kKV), rows[size_t(h / (kH / kKV))], &O[size_t(t * kQd + h * kHd)]);
  }
  return O;
}

TEST_P(Evict, SnapKvMatchesReferenceSimulation) {
  Inputs in = RandomInputs(70, 4);
  for (auto [budget, w, pool] : {std::tuple{16, 8, 3}, {24, 4, 1}, {20, 16, 7}}) {
    const std::string spec = "snapkv:budget=" + std::to_string(budget) + ",window=" + std::to_string(w) + ",pool=" + std::to_string(pool);
    auto p = Make(spec);
    // 1e-4 as for H2O: pooled votes of random data are distinct, so both keep the same rows.
    ExpectNear(RunChunks(*p, in, {40, 1}), SnapRef(in, 40, budget, w, pool), {40, 1}, 1e-4, spec);
  }
}

TEST_P(Evict, CausalUnderPrefillAndDecode) {
  int ran = 0;
  for (std::string spec : {"streaming:budget=20,sinks=4", "h2o:budget=16,recent=8", "h2o:budget=16,recent=4",
                           "snapkv:budget=16,window=4,pool=3", "streaming:budget=24+mx:fmt=fp4",
                           "h2o:budget=20+kivi:bits=4,group=8,residual=4", "snapkv:budget=24+mx:fmt=nvfp4"}) {
    if (!Serves(spec)) continue;  // the GPU keeps no KIVI rows under eviction
    for (std::vector<int> chunks : {std::vector<int>{90}, {30, 1}, {40, 17, 1}, {1}}) ExpectCausal(spec, chunks);
    ++ran;
  }
  EXPECT_GE(ran, 6);
}

TEST_P(Evict, BytesMatchHandCount) {
  Inputs in = RandomInputs(40, 5);
  const size_t row = 2 * kHd * 4;  // one f32 key and value row of one KV head
  // streaming budget 16 after 40 single-token steps: the last Append (position 39) dropped
  // positions below 39 - 14 + 1 = 26 except the 2 sinks: 16 rows per head, plus a 4-byte position each.
  auto s = Make("streaming:budget=16,sinks=2");
  RunChunks(*s, in, {1});
  EXPECT_EQ(s->Bytes(), size_t(kKV * 16) * (row + 4));
  EXPECT_EQ(s->Length(), 40);
  // One chunk of 40 keeps every row until the next Append (the chunk's queries need them).
  auto s1 = Make("streaming:budget=16,sinks=2");
  RunChunks(*s1, in, {40});
  EXPECT_EQ(s1->Bytes(), size_t(kKV * 40) * (row + 4));
  // h2o evicts at Update (or the next Append) by the attention Attend recorded: after the last
  // Attend one row over budget, then budget rows, each with a position and an accumulated score.
  auto h = Make("h2o:budget=12");
  RunChunks(*h, in, {20, 1});
  EXPECT_EQ(h->Bytes(), size_t(kKV * 13) * (row + 8));
  ASSERT_TRUE(h->Update().ok());
  EXPECT_EQ(h->Bytes(), size_t(kKV * 12) * (row + 8));
  // snapkv: budget rows after the 30-token prompt, then one more per decode step (10 steps).
  auto k = Make("snapkv:budget=12,window=4");
  RunChunks(*k, in, {30, 1});
  EXPECT_EQ(k->Bytes(), size_t(kKV * (12 + 10)) * (row + 4));
  // With a codec the rows take the codec's size: mx fp8 rows of 64 are 2 scale bytes + 64 elements.
  auto m = Make("snapkv:budget=12,window=4+mx:fmt=fp8_e4m3");
  RunChunks(*m, in, {30, 1});
  EXPECT_EQ(m->Bytes(), size_t(kKV * (12 + 10)) * (2 * 66 + 4));
}

TEST(EvictParser, RejectsBadParameters) {
  EXPECT_FALSE(ParseKvPolicy("streaming:budget=4,sinks=4").ok());
  EXPECT_FALSE(ParseKvPolicy("snapkv:budget=8,window=8").ok());
  EXPECT_FALSE(ParseKvPolicy("h2o:budget=8,recent=9").ok());
  EXPECT_FALSE(ParseKvPolicy("h2o:budget=0").ok());
  auto bad = ParseKvPolicy("snapkv:budgte=8");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("window"), std::string::npos);  // lists the valid keys
  auto d = ParseKvPolicy("h2o:budget=64");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value()->Describe(), "h2o:budget=64,recent=32");
}

}  // namespace
}  // namespace atp
