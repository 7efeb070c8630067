// Token choice on the GPU (cuda/sample.h) against the host's (sampling/choose.h) on the same logits
// (compiled only with ATP_CUDA; every test skips, saying why, without a usable GPU). Greedy and the
// top logprobs' ids must be identical; logprobs within 1e-5; sampled ids identical at every draw
// except where the host's brute-force reference puts a decision within 1e-5 (relative) of its
// threshold: there the GPU's expf (2 ulp) and its tree-ordered double sums may decide otherwise.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "cuda/check.h"
#include "cuda/sample.h"
#include "cuda_test_util.h"
#include "sampling/choose.h"
#include "sampling_reference.h"

namespace atp {
namespace {

std::vector<float> RandomRow(int V, uint32_t seed, bool quantized) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, 3);
  std::vector<float> l(static_cast<size_t>(V));
  for (auto& x : l) x = quantized ? std::round(d(rng) * 2) / 2 : d(rng);  // halves: many ties
  return l;
}

struct Query {
  int row;
  SamplingParams p;
  std::vector<int32_t> hist;
  uint64_t draw;
  int top_n;
};

// Runs the queries over rows (each V floats) in one launch, as cuda/forward.cpp does. ms: when not null,
// the mean time of 10 more launches, in milliseconds.
std::vector<cuda::SampleResult> RunOnGpu(const std::vector<std::vector<float>>& rows, const std::vector<Query>& qs,
                                         float* ms = nullptr) {
  const int V = int(rows[0].size());
  std::vector<float> flat;
  for (auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  std::vector<cuda::SampleQuery> dq;
  std::vector<int32_t> hist;
  for (auto& q : qs) {
    dq.push_back({q.row, q.p.top_k, q.p.temperature, q.p.top_p, q.p.min_p, q.p.repetition_penalty, q.top_n,
                  int32_t(hist.size()), int32_t(q.hist.size()), q.p.seed, q.draw});
    hist.insert(hist.end(), q.hist.begin(), q.hist.end());
  }
  hist.push_back(0);  // never empty
  cuda::DeviceArray<float> d_logits;
  cuda::DeviceArray<cuda::SampleQuery> d_q;
  cuda::DeviceArray<int32_t> d_hist;
  cuda::DeviceArray<uint32_t> d_seen;
  cuda::DeviceArray<cuda::SampleResult> d_out;
  std::vector<cuda::SampleResult> out(qs.size());
  const bool ok = d_logits.Grow(flat.size()).ok() && d_q.Grow(dq.size()).ok() && d_hist.Grow(hist.size()).ok() &&
                  d_seen.Grow(size_t(dq.size() * cuda::SampleSeenWords(V))).ok() && d_out.Grow(dq.size()).ok() &&
                  cudaMemcpy(d_logits.get(), flat.data(), flat.size() * 4, cudaMemcpyHostToDevice) == cudaSuccess &&
                  cudaMemcpy(d_q.get(), dq.data(), dq.size() * sizeof(dq[0]), cudaMemcpyHostToDevice) == cudaSuccess &&
                  cudaMemcpy(d_hist.get(), hist.data(), hist.size() * 4, cudaMemcpyHostToDevice) == cudaSuccess;
  EXPECT_TRUE(ok);
  cuda::ChooseTokens(d_logits.get(), V, d_q.get(), int(dq.size()), d_hist.get(), d_seen.get(), d_out.get(), nullptr);
  EXPECT_TRUE(cuda::LastLaunch("choose").ok());
  if (ms) {
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    cudaEventRecord(a, nullptr);
    for (int i = 0; i < 10; ++i)
      cuda::ChooseTokens(d_logits.get(), V, d_q.get(), int(dq.size()), d_hist.get(), d_seen.get(), d_out.get(), nullptr);
    cudaEventRecord(b, nullptr);
    cudaEventSynchronize(b);
    cudaEventElapsedTime(ms, a, b);
    *ms /= 10;
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  EXPECT_EQ(cudaMemcpy(out.data(), d_out.get(), out.size() * sizeof(out[0]), cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

TokenChoice OnHost(const std::vector<std::vector<float>>& rows, const Query& q) {
  HostChooser c;
  return c.Choose(rows[size_t(q.row)], TokenQuery{0, q.p, q.hist, q.draw, q.top_n});
}

std::vector<std::vector<float>> RandomLogitRows(int V, int n, uint32_t seed) {
  std::vector<std::vector<float>> rows;
  for (int i = 0; i < n; ++i) rows.push_back(RandomRow(V, seed + uint32_t(i), i % 2 == 1));
  return rows;
}

std::vector<int32_t> History(int V, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> h;
  for (int i = 0; i < n; ++i) h.push_back(int32_t(rng() % uint32_t(V)));
  return h;
}

TEST(CudaSample, GreedyMatchesHostExactly) {
  ATP_SKIP_WITHOUT_GPU();
  for (int V : {1, 5, 1000, 32000, 128256}) {
    const auto rows = RandomLogitRows(V, 6, uint32_t(V));
    std::vector<Query> qs;
    for (int r = 0; r < 6; ++r)
      for (float penalty : {1.0f, 1.3f, 0.8f}) {
        SamplingParams p{0, 40, 0.9f, 0.05f, penalty, 1};
        qs.push_back({r, p, History(V, 300, uint32_t(r)), 0, -1});
      }
    const auto got = RunOnGpu(rows, qs);
    for (size_t i = 0; i < qs.size(); ++i)
      EXPECT_EQ(got[i].id, OnHost(rows, qs[i]).id) << "V " << V << " query " << i;
  }
}

TEST(CudaSample, SamplingMatchesHostAtFixedDraws) {
  ATP_SKIP_WITHOUT_GPU();
  int compared = 0, differ = 0;
  for (int V : {7, 1000, 32000}) {
    const auto rows = RandomLogitRows(V, 4, 100 + uint32_t(V));
    std::vector<Query> qs;
    uint64_t seed = 0;
    for (int r = 0; r < 4; ++r)
      for (float temp : {0.5f, 1.0f, 1.7f})
        for (int top_k : {0, 1, 5, 40, V / 2, V + 3})
          for (float top_p : {1.0f, 0.9f, 0.3f})
            for (float min_p : {0.0f, 0.05f})
              for (float penalty : {1.0f, 1.2f})
                for (uint64_t draw : {0, 17})
                  qs.push_back({r, SamplingParams{temp, top_k, top_p, min_p, penalty, seed++}, History(V, 50, uint32_t(seed)), draw, -1});
    const auto got = RunOnGpu(rows, qs);
    for (size_t i = 0; i < qs.size(); ++i) {
      const int32_t want = OnHost(rows, qs[i]).id;
      ++compared;
      if (got[i].id == want) continue;
      ++differ;
      const auto ref = testing::ChooseByReference(rows[size_t(qs[i].row)], qs[i].p, qs[i].hist, qs[i].draw);
      EXPECT_LT(ref.margin, 1e-5) << "V " << V << " query " << i << ": GPU " << got[i].id << ", host " << want
                                  << ", with every decision " << ref.margin << " (relative) from its threshold";
    }
  }
  std::cerr << "[cuda] " << compared << " sampled choices, " << differ << " differing within rounding of a threshold\n";
  EXPECT_LE(differ, compared / 200);
}

TEST(CudaSample, LogprobsMatchHost) {
  ATP_SKIP_WITHOUT_GPU();
  for (int V : {3, 1000, 128256}) {
    const auto rows = RandomLogitRows(V, 4, 7 + uint32_t(V));
    std::vector<Query> qs;
    for (int r = 0; r < 4; ++r)
      for (int n : {0, 1, 5, 20})
        for (float temp : {0.0f, 1.0f})
          qs.push_back({r, SamplingParams{temp, 0, 1, 0, 1.5f, uint64_t(n)}, History(V, 20, uint32_t(r)), 3, n});
    const auto got = RunOnGpu(rows, qs);
    for (size_t i = 0; i < qs.size(); ++i) {
      const TokenChoice want = OnHost(rows, qs[i]);
      if (got[i].id != want.id) continue;  // a sampled choice may part at a threshold (the test above)
      EXPECT_NEAR(got[i].logprob, want.logprob, 1e-5) << "V " << V << " query " << i;
      ASSERT_EQ(int(want.top.size()), std::min(qs[i].top_n, V));
      for (size_t j = 0; j < want.top.size(); ++j) {
        EXPECT_EQ(got[i].top_ids[j], want.top[j].first) << "V " << V << " query " << i << " rank " << j;
        EXPECT_NEAR(got[i].top_logprobs[j], want.top[j].second, 1e-5) << "V " << V << " query " << i << " rank " << j;
      }
    }
  }
}

// A serving step's worth: 64 rows of a 128k vocabulary (Llama 3's), one launch, for the parameter
// mixes a server sees; every row's choice equal to the host's (sampled ones within rounding of a
// threshold excepted, as above), and the kernel time printed for the lead's notes.
TEST(CudaSample, A64RowStepOfLlama3VocabularyMatchesHost) {
  ATP_SKIP_WITHOUT_GPU();
  const int V = 128256, R = 64;
  std::vector<std::vector<float>> rows;
  for (int r = 0; r < R; ++r) rows.push_back(RandomRow(V, 500 + uint32_t(r), false));
  struct Mix {
    const char* name;
    SamplingParams p;
    int top_n;
  };
  const Mix mixes[] = {{"greedy", {0, 0, 1, 0, 1, 1}, -1},
                       {"greedy, 20 top logprobs", {0, 0, 1, 0, 1, 1}, 20},
                       {"temperature 1 (OpenAI's defaults)", {1, 0, 1, 0, 1, 1}, -1},
                       {"top-k 40, top-p 0.95, min-p 0.05, temperature 0.8", {0.8f, 40, 0.95f, 0.05f, 1, 1}, -1},
                       {"top-p 0.9, temperature 0.7, repetition penalty 1.1", {0.7f, 0, 0.9f, 0, 1.1f, 1}, -1}};
  for (const Mix& m : mixes) {
    std::vector<Query> qs;
    for (int r = 0; r < R; ++r) {
      SamplingParams p = m.p;
      p.seed = uint64_t(r);
      qs.push_back({r, p, History(V, 512, uint32_t(r)), 5, m.top_n});
    }
    float ms = 0;
    const auto got = RunOnGpu(rows, qs, &ms);
    int differ = 0;
    for (int r = 0; r < R; ++r) {
      const TokenChoice want = OnHost(rows, qs[size_t(r)]);
      if (got[size_t(r)].id != want.id) {
        ++differ;
        EXPECT_LT(testing::ChooseByReference(rows[size_t(r)], qs[size_t(r)].p, qs[size_t(r)].hist, 5).margin, 1e-5)
            << m.name << " row " << r;
        continue;
      }
      for (int j = 0; j < m.top_n; ++j) EXPECT_EQ(got[size_t(r)].top_ids[j], want.top[size_t(j)].first) << m.name;
    }
    EXPECT_LE(differ, 1) << m.name;
    std::cerr << "[cuda] choose, 64 rows x " << V << ": " << m.name << ": " << ms << " ms\n";
  }
}

// The GPU's draws follow the distribution the rules define: 20,000 draws from one row (one query per
// draw, one launch), chi-square against the kept tokens' normalized weights.
TEST(CudaSample, DrawsFollowTheFilteredDistribution) {
  ATP_SKIP_WITHOUT_GPU();
  const int V = 50, n = 20000;
  const std::vector<std::vector<float>> rows = {RandomRow(V, 99, false)};
  const SamplingParams p{1.0f, 0, 0.9f, 0.0f, 1.0f, 4242};
  std::vector<Query> qs;
  for (int i = 0; i < n; ++i) qs.push_back({0, p, {}, uint64_t(i), -1});
  const auto got = RunOnGpu(rows, qs);
  // Expected: the rules' kept set (the top-p prefix) and normalized weights, from the reference.
  std::vector<int32_t> order(V);
  for (int i = 0; i < V; ++i) order[size_t(i)] = i;
  const auto& l = rows[0];
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[size_t(a)] > l[size_t(b)]; });
  std::vector<double> w(V);
  double z = 0;
  for (int i = 0; i < V; ++i) z += w[size_t(i)] = sampling::Weight(l[size_t(i)], l[size_t(order[0])], 1.0f);
  std::vector<double> prob(V, 0.0);
  double c = 0, kept = 0;
  for (int32_t id : order) {
    prob[size_t(id)] = w[size_t(id)];
    kept += w[size_t(id)];
    if ((c += w[size_t(id)]) >= 0.9 * z) break;
  }
  std::vector<int> h(V, 0);
  for (auto& r : got) ++h[size_t(r.id)];
  double chi2 = 0;
  int df = -1;
  for (int i = 0; i < V; ++i) {
    if (prob[size_t(i)] == 0) {
      EXPECT_EQ(h[size_t(i)], 0) << "token " << i << " is outside the top-p set";
      continue;
    }
    const double e = n * prob[size_t(i)] / kept;
    chi2 += (h[size_t(i)] - e) * (h[size_t(i)] - e) / e;
    ++df;
  }
  ASSERT_GT(df, 0) << "the top-p set holds one token: no distribution to test";
  // The chi-square 0.001 quantile by Wilson and Hilferty's approximation.
  const double a = 2.0 / (9.0 * df), crit = df * std::pow(1 - a + 3.09 * std::sqrt(a), 3);
  std::cerr << "[cuda] chi-square " << chi2 << " with " << df << " degrees of freedom (0.001 quantile " << crit << ")\n";
  EXPECT_LT(chi2, crit);
}

}  // namespace
}  // namespace atp
