// The host's token choice (sampling/choose.h) on crafted distributions: greedy is argmax, filters never
// let a token outside the allowed set through, seeds reproduce, the repetition penalty pushes repeated
// tokens down, and bad parameters are refused by name. Then against a brute-force reference of the
// rules of sampling/rules.h (sort everything, apply the filters, inverse CDF at the draw) over random
// logits, ties included, and every mix of parameters; and the counter-based draw itself.
#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "sampling/choose.h"
#include "sampling/rules.h"
#include "sampling_reference.h"

namespace atp {
namespace {

SamplingParams Plain(float temp) {  // every filter off
  SamplingParams p;
  p.temperature = temp;
  p.top_k = 0;
  p.top_p = 1;
  p.min_p = 0;
  p.repetition_penalty = 1;
  return p;
}

// Logits whose softmax at temperature 1 is exactly `probs` (up to float rounding).
std::vector<float> FromProbs(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(float(std::log(p)));
  return l;
}

std::vector<float> RandomLogits(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, 3);
  std::vector<float> l(static_cast<size_t>(n));
  for (auto& x : l) x = d(rng);
  return l;
}

int32_t Argmax(const std::vector<float>& l) { return int32_t(std::max_element(l.begin(), l.end()) - l.begin()); }

// The token that draw number `draw` of p's seed picks.
int32_t Pick(const SamplingParams& p, const std::vector<float>& l, std::span<const int32_t> history = {},
             uint64_t draw = 0) {
  HostChooser c;
  return c.Choose(l, TokenQuery{0, p, history, draw, -1}).id;
}

TEST(Sampler, GreedyIsArgmax) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    auto l = RandomLogits(1000, seed);
    EXPECT_EQ(Pick(Plain(0), l), Argmax(l)) << "seed " << seed;
  }
  // Ties go to the lowest id; the other filters are ignored at temperature 0.
  std::vector<float> tie = {0, 5, 1, 5, 5};
  SamplingParams p = Plain(0);
  p.top_k = 1;
  p.top_p = 0.1f;
  EXPECT_EQ(Pick(p, tie), 1);
}

TEST(Sampler, TopK1IsGreedyAtAnyTemperature) {
  for (float temp : {0.1f, 1.0f, 5.0f, 100.0f}) {
    auto l = RandomLogits(500, 3);
    SamplingParams p = Plain(temp);
    p.top_k = 1;
    p.seed = 9;
    for (int i = 0; i < 200; ++i) ASSERT_EQ(Pick(p, l, {}, uint64_t(i)), Argmax(l)) << "temperature " << temp;
  }
}

// Draws 0..n-1 of p's seed: a sequence's first n tokens, were the logits the same at every step.
std::vector<int32_t> Draw(const SamplingParams& p, const std::vector<float>& l, int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(Pick(p, l, {}, uint64_t(i)));
  return out;
}

TEST(Sampler, SameSeedSameTokens) {
  std::vector<float> l(100, 0.f);  // uniform over 100 tokens: draws depend only on the RNG
  SamplingParams p = Plain(1);
  p.seed = 1234;
  EXPECT_EQ(Draw(p, l, 64), Draw(p, l, 64));
  SamplingParams q = p;
  q.seed = 1235;
  EXPECT_NE(Draw(p, l, 64), Draw(q, l, 64));  // 64 draws from 100 tokens: equal by chance with p ~ 1e-128
}

// p = 0.5, 0.3, 0.1, 0.05, then 10 tokens sharing 0.05.
const std::vector<double> kProbs = {0.5, 0.3, 0.1, 0.05, 0.005, 0.005, 0.005, 0.005, 0.005,
                                    0.005, 0.005, 0.005, 0.005, 0.005};

// Counts of each token over n draws.
std::map<int32_t, int> DrawCounts(const SamplingParams& p, int n) {
  std::map<int32_t, int> h;
  for (int32_t t : Draw(p, FromProbs(kProbs), n)) ++h[t];
  return h;
}

TEST(Sampler, TopPKeepsSmallestPrefixReachingP) {
  SamplingParams p = Plain(1);
  p.top_p = 0.75f;  // 0.5 < 0.75 <= 0.5 + 0.3: tokens {0, 1}
  p.seed = 5;
  const int n = 4000;
  auto h = DrawCounts(p, n);
  for (auto [tok, count] : h) EXPECT_TRUE(tok == 0 || tok == 1) << "token " << tok << " drawn " << count << " times";
  // Renormalized: 0.5/0.8 = 0.625. Binomial sd at n=4000 is 0.008; 0.04 is five sd.
  EXPECT_NEAR(double(h[0]) / n, 0.625, 0.04);
  p.top_p = 0.93f;  // 0.9 < 0.93 <= 0.95: tokens {0,1,2,3} (kept off the 0.95 knife edge)
  h = DrawCounts(p, n);
  for (auto [tok, count] : h) EXPECT_LE(tok, 3) << "token " << tok;
  EXPECT_GT(h[3], 0);
}

TEST(Sampler, MinPDropsTokensBelowFractionOfBest) {
  SamplingParams p = Plain(1);
  p.min_p = 0.15f;  // threshold 0.075: tokens {0, 1, 2}
  p.seed = 6;
  const int n = 4000;
  auto h = DrawCounts(p, n);
  for (auto [tok, count] : h) EXPECT_LE(tok, 2) << "token " << tok << " drawn " << count << " times";
  EXPECT_NEAR(double(h[2]) / n, 0.1 / 0.9, 0.03);
}

TEST(Sampler, TopKKeepsKBest) {
  SamplingParams p = Plain(1);
  p.top_k = 3;
  p.seed = 7;
  auto h = DrawCounts(p, 3000);
  for (auto [tok, count] : h) EXPECT_LE(tok, 2) << "token " << tok;
  EXPECT_EQ(h.size(), 3u);
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  SamplingParams p = Plain(0.25f);  // p^4 renormalized: token 0 gets 0.5^4 / sum ~ 0.88
  p.seed = 8;
  auto sharp = DrawCounts(p, 3000);
  EXPECT_GT(double(sharp[0]) / 3000, 0.8);
  p.temperature = 4;
  auto flat = DrawCounts(p, 3000);
  EXPECT_LT(double(flat[0]) / 3000, 0.3);
}

TEST(Sampler, RepetitionPenaltyLowersRepeatedTokens) {
  SamplingParams p = Plain(0);
  p.repetition_penalty = 1.5f;
  // Positive logits are divided: 2.0 / 1.5 = 1.33 < 1.5.
  std::vector<float> pos = {2.0f, 1.5f, 0.1f};
  EXPECT_EQ(Pick(p, pos), 0);
  const int32_t hist0[] = {0, 0, 2};  // token 0 twice: penalized once
  EXPECT_EQ(Pick(p, pos, hist0), 1);
  // Seven times in the history is still once: 2.0 / 1.5 = 1.33 > 1.2 (seven times would be 0.12).
  const int32_t hist7[] = {0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(Pick(p, std::vector<float>{2.0f, 1.2f}, hist7), 0);
  // Negative logits are multiplied: -1.0 * 1.5 = -1.5 < -1.2.
  std::vector<float> neg = {-1.0f, -1.2f, -9.f};
  EXPECT_EQ(Pick(p, neg, hist0), 1);
  // Under sampling, the repeated token's frequency drops.
  SamplingParams with = Plain(1);
  with.seed = 3;
  with.repetition_penalty = 2.0f;
  SamplingParams without = with;
  without.repetition_penalty = 1.0f;
  auto l = FromProbs(kProbs);
  const int32_t hist[] = {0};
  int a = 0, b = 0;
  for (int i = 0; i < 3000; ++i) a += Pick(with, l, hist, uint64_t(i)) == 0, b += Pick(without, l, hist, uint64_t(i)) == 0;
  EXPECT_LT(a, b - 300) << "penalized " << a << " vs unpenalized " << b;
}

TEST(Sampler, LogProbIsLogSoftmax) {
  auto l = RandomLogits(300, 21);
  double mx = *std::max_element(l.begin(), l.end()), z = 0;
  for (float v : l) z += std::exp(double(v) - mx);
  for (int32_t id : {0, 17, 299, Argmax(l)})
    EXPECT_NEAR(LogProb(l, id), double(l[size_t(id)]) - mx - std::log(z), 1e-5);
}

TEST(Sampler, HostChoiceMatchesBruteForceReference) {
  std::mt19937 rng(2024);
  int compared = 0, ambiguous_rows = 0;
  HostChooser chooser;
  for (int32_t V : {1, 2, 7, 64, 301}) {
    for (int trial = 0; trial < 12; ++trial) {
      // Half the rows are quantized to quarters, so that ties straddle the cuts.
      std::vector<float> raw = RandomLogits(V, rng());
      if (trial % 2)
        for (auto& x : raw) x = std::round(x * 4) / 4;
      std::vector<int32_t> hist;
      for (int i = 0; i < V / 3; ++i) hist.push_back(int32_t(rng() % uint32_t(V)));
      for (float temp : {0.0f, 0.3f, 1.0f, 2.5f})
        for (int top_k : {0, 1, 3, V / 2, V, V + 5})
          for (float top_p : {1.0f, 0.9f, 0.5f, 0.05f})
            for (float min_p : {0.0f, 0.05f, 0.4f})
              for (float penalty : {1.0f, 1.3f, 0.7f}) {
                SamplingParams p{temp, top_k, top_p, min_p, penalty, rng()};
                const uint64_t draw = rng() % 1000;
                // The reference sums Z in rank order, the host in its own: they may part only where
                // a running sum is within rounding of its threshold.
                const testing::ReferenceChoice want = testing::ChooseByReference(raw, p, hist, draw);
                if (want.margin < 1e-12) {
                  ++ambiguous_rows;
                  continue;
                }
                const TokenChoice got = chooser.Choose(raw, TokenQuery{0, p, hist, draw, -1});
                ++compared;
                if (want.id >= 0) {
                  ASSERT_EQ(got.id, want.id) << "V " << V << " trial " << trial << " temperature " << temp << " top_k " << top_k
                                          << " top_p " << top_p << " min_p " << min_p << " penalty " << penalty;
                }
              }
    }
  }
  std::cerr << "[sampler] " << compared << " choices equal to the reference; " << ambiguous_rows
            << " skipped with a decision within 1e-12 of its threshold\n";
  EXPECT_LT(ambiguous_rows, compared / 100);
}

TEST(Sampler, LogprobsAreOfRawLogitsWithTopInRankOrder) {
  std::vector<float> l = RandomLogits(500, 5);
  l[7] = l[9] = l[Argmax(l)];  // ties at the top: lowest id first
  double mx = *std::max_element(l.begin(), l.end()), z = 0;
  for (float v : l) z += std::exp(double(v) - mx);
  SamplingParams p = Plain(0.7f);
  p.repetition_penalty = 3;  // changes the choice, never the logprobs
  const int32_t hist[] = {7, 9, 100};
  HostChooser c;
  for (int n : {0, 1, 5, 20}) {
    const TokenChoice got = c.Choose(l, TokenQuery{0, p, hist, 3, n});
    EXPECT_NEAR(got.logprob, double(l[size_t(got.id)]) - mx - std::log(z), 1e-5);
    std::vector<int32_t> order(l.size());
    for (size_t i = 0; i < l.size(); ++i) order[i] = int32_t(i);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[size_t(a)] > l[size_t(b)]; });
    ASSERT_EQ(got.top.size(), size_t(n));
    for (int j = 0; j < n; ++j) {
      EXPECT_EQ(got.top[size_t(j)].first, order[size_t(j)]) << j;
      EXPECT_NEAR(got.top[size_t(j)].second, double(l[size_t(order[size_t(j)])]) - mx - std::log(z), 1e-5);
    }
  }
  // Without logprobs asked for, none come back.
  EXPECT_TRUE(c.Choose(l, TokenQuery{0, p, hist, 3, -1}).top.empty());
}

// The draw is a pure function of (seed, draw index): uniform over (0, 1], different across seeds and
// indexes, and computed without the draws before it (what keeps a preempted sequence's tokens).
TEST(Sampler, CounterBasedDrawIsUniform) {
  const int n = 100000, bins = 20;
  std::vector<int> h(bins, 0);
  double lo = 1, hi = 0;
  for (int i = 0; i < n; ++i) {
    const double u = sampling::Uniform(uint64_t(i / 1000), uint64_t(i % 1000));  // 100 seeds x 1000 draws
    lo = std::min(lo, u), hi = std::max(hi, u);
    ++h[size_t(std::min(int(u * bins), bins - 1))];
  }
  EXPECT_GT(lo, 0.0);
  EXPECT_LE(hi, 1.0);
  double chi2 = 0;
  for (int c : h) chi2 += (c - double(n) / bins) * (c - double(n) / bins) / (double(n) / bins);
  EXPECT_LT(chi2, 43.8) << "chi-square with 19 degrees of freedom beyond its 0.001 quantile";
  EXPECT_EQ(sampling::Uniform(7, 123), sampling::Uniform(7, 123));
  EXPECT_NE(sampling::Uniform(7, 123), sampling::Uniform(8, 123));
  EXPECT_NE(sampling::Uniform(7, 123), sampling::Uniform(7, 124));
}

TEST(Sampler, OrderKeyOrdersLikeFloats) {
  const float xs[] = {-INFINITY, -1e30f, -2.5f, -1e-40f, -0.0f, 0.0f, 1e-40f, 1.0f, 3.5f, 1e30f, INFINITY};
  for (float a : xs)
    for (float b : xs) {
      EXPECT_EQ(sampling::OrderKey(a) < sampling::OrderKey(b), a < b) << a << " " << b;
      EXPECT_EQ(sampling::OrderKey(a) == sampling::OrderKey(b), a == b) << a << " " << b;
    }
  for (float a : xs) {
    if (a != 0) {
      EXPECT_EQ(sampling::FromOrderKey(sampling::OrderKey(a)), a);
    }
  }
}

TEST(Sampler, QueryCheckNamesTheProblem) {
  TokenQuery q;
  q.params = Plain(1);
  EXPECT_TRUE(q.Check(1).ok());
  q.row = 1;
  EXPECT_NE(q.Check(1).message().find("row 1"), std::string::npos);
  q.row = 0;
  q.top_logprobs = kMaxTopLogprobs + 1;
  EXPECT_NE(q.Check(1).message().find("top_logprobs"), std::string::npos);
  q.top_logprobs = -1;
  q.params.top_p = 2;
  EXPECT_NE(q.Check(1).message().find("top_p"), std::string::npos);
}

TEST(Sampler, ValidateRejectsBadParameters) {
  EXPECT_TRUE(SamplingParams().Validate().ok());
  struct Case {
    const char* name;
    void (*set)(SamplingParams*);
  };
  const Case cases[] = {
      {"temperature", [](SamplingParams* p) { p->temperature = -0.5f; }},
      {"temperature", [](SamplingParams* p) { p->temperature = std::nanf(""); }},
      {"top_k", [](SamplingParams* p) { p->top_k = -1; }},
      {"top_p", [](SamplingParams* p) { p->top_p = 0; }},
      {"top_p", [](SamplingParams* p) { p->top_p = 1.5f; }},
      {"top_p", [](SamplingParams* p) { p->top_p = std::nanf(""); }},
      {"min_p", [](SamplingParams* p) { p->min_p = -0.1f; }},
      {"min_p", [](SamplingParams* p) { p->min_p = 2; }},
      {"repetition_penalty", [](SamplingParams* p) { p->repetition_penalty = 0; }},
      {"repetition_penalty", [](SamplingParams* p) { p->repetition_penalty = -1; }},
  };
  for (auto& c : cases) {
    SamplingParams p;
    c.set(&p);
    Status s = p.Validate();
    ASSERT_FALSE(s.ok()) << c.name;
    EXPECT_NE(s.message().find(c.name), std::string::npos) << s.ToString();
  }
}

}  // namespace
}  // namespace atp
