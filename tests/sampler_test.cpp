// The sampler on crafted distributions: greedy is argmax, filters never let a token outside the
// allowed set through, seeds reproduce, the repetition penalty pushes repeated tokens down, and
// bad parameters are refused by name.
#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "engine/sampler.h"

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

TEST(Sampler, GreedyIsArgmax) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    auto l = RandomLogits(1000, seed);
    Sampler s(Plain(0));
    EXPECT_EQ(s.Sample(l, {}), Argmax(l)) << "seed " << seed;
  }
  // Ties go to the lowest id; the other filters are ignored at temperature 0.
  std::vector<float> tie = {0, 5, 1, 5, 5};
  SamplingParams p = Plain(0);
  p.top_k = 1;
  p.top_p = 0.1f;
  Sampler s(p);
  EXPECT_EQ(s.Sample(tie, {}), 1);
}

TEST(Sampler, TopK1IsGreedyAtAnyTemperature) {
  for (float temp : {0.1f, 1.0f, 5.0f, 100.0f}) {
    auto l = RandomLogits(500, 3);
    SamplingParams p = Plain(temp);
    p.top_k = 1;
    p.seed = 9;
    Sampler s(p);
    for (int i = 0; i < 200; ++i) ASSERT_EQ(s.Sample(l, {}), Argmax(l)) << "temperature " << temp;
  }
}

std::vector<int32_t> Draw(const SamplingParams& p, const std::vector<float>& l, int n) {
  Sampler s(p);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(s.Sample(l, {}));
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
std::map<int32_t, int> Histogram(const SamplingParams& p, int n) {
  std::map<int32_t, int> h;
  for (int32_t t : Draw(p, FromProbs(kProbs), n)) ++h[t];
  return h;
}

TEST(Sampler, TopPKeepsSmallestPrefixReachingP) {
  SamplingParams p = Plain(1);
  p.top_p = 0.75f;  // 0.5 < 0.75 <= 0.5 + 0.3: tokens {0, 1}
  p.seed = 5;
  const int n = 4000;
  auto h = Histogram(p, n);
  for (auto [tok, count] : h) EXPECT_TRUE(tok == 0 || tok == 1) << "token " << tok << " drawn " << count << " times";
  // Renormalized: 0.5/0.8 = 0.625. Binomial sd at n=4000 is 0.008; 0.04 is five sd.
  EXPECT_NEAR(double(h[0]) / n, 0.625, 0.04);
  p.top_p = 0.93f;  // 0.9 < 0.93 <= 0.95: tokens {0,1,2,3} (kept off the 0.95 knife edge)
  h = Histogram(p, n);
  for (auto [tok, count] : h) EXPECT_LE(tok, 3) << "token " << tok;
  EXPECT_GT(h[3], 0);
}

TEST(Sampler, MinPDropsTokensBelowFractionOfBest) {
  SamplingParams p = Plain(1);
  p.min_p = 0.15f;  // threshold 0.075: tokens {0, 1, 2}
  p.seed = 6;
  const int n = 4000;
  auto h = Histogram(p, n);
  for (auto [tok, count] : h) EXPECT_LE(tok, 2) << "token " << tok << " drawn " << count << " times";
  EXPECT_NEAR(double(h[2]) / n, 0.1 / 0.9, 0.03);
}

TEST(Sampler, TopKKeepsKBest) {
  SamplingParams p = Plain(1);
  p.top_k = 3;
  p.seed = 7;
  auto h = Histogram(p, 3000);
  for (auto [tok, count] : h) EXPECT_LE(tok, 2) << "token " << tok;
  EXPECT_EQ(h.size(), 3u);
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  SamplingParams p = Plain(0.25f);  // p^4 renormalized: token 0 gets 0.5^4 / sum ~ 0.88
  p.seed = 8;
  auto sharp = Histogram(p, 3000);
  EXPECT_GT(double(sharp[0]) / 3000, 0.8);
  p.temperature = 4;
  auto flat = Histogram(p, 3000);
  EXPECT_LT(double(flat[0]) / 3000, 0.3);
}

TEST(Sampler, RepetitionPenaltyLowersRepeatedTokens) {
  SamplingParams p = Plain(0);
  p.repetition_penalty = 1.5f;
  Sampler s(p);
  // Positive logits are divided: 2.0 / 1.5 = 1.33 < 1.5.
  std::vector<float> pos = {2.0f, 1.5f, 0.1f};
  EXPECT_EQ(s.Sample(pos, {}), 0);
  const int32_t hist0[] = {0, 0, 2};
  EXPECT_EQ(s.Sample(pos, hist0), 1);
  // Negative logits are multiplied: -1.0 * 1.5 = -1.5 < -1.2.
  std::vector<float> neg = {-1.0f, -1.2f, -9.f};
  EXPECT_EQ(s.Sample(neg, hist0), 1);
  // Under sampling, the repeated token's frequency drops.
  SamplingParams q = Plain(1);
  q.seed = 3;
  q.repetition_penalty = 2.0f;
  Sampler with(q);
  q.repetition_penalty = 1.0f;
  Sampler without(q);
  auto l = FromProbs(kProbs);
  const int32_t hist[] = {0};
  int a = 0, b = 0;
  for (int i = 0; i < 3000; ++i) a += with.Sample(l, hist) == 0, b += without.Sample(l, hist) == 0;
  EXPECT_LT(a, b - 300) << "penalized " << a << " vs unpenalized " << b;
}

TEST(Sampler, LogProbIsLogSoftmax) {
  auto l = RandomLogits(300, 21);
  double mx = *std::max_element(l.begin(), l.end()), z = 0;
  for (float v : l) z += std::exp(double(v) - mx);
  for (int32_t id : {0, 17, 299, Argmax(l)})
    EXPECT_NEAR(Sampler::LogProb(l, id), double(l[size_t(id)]) - mx - std::log(z), 1e-5);
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
