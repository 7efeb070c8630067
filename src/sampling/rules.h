// The token-choice rules, written once for the host (sampling/choose.cpp) and the GPU (cuda/sample.cu):
// the per-token functions below are compiled by both the C++ compiler and nvcc, so a rule means the
// same on both backends. What the two implement with them, for one logit row and a TokenQuery:
//
//  1. Repetition penalty (CTRL): every token of the history (each once, however often it occurs)
//     has its logit l replaced by Penalize(l); the rest of the choice sees these logits.
//  2. Temperature 0 is greedy: the first token in rank order (largest logit, lowest id among equal
//     logits); the other filters are ignored.
//  3. Otherwise tokens are taken in rank order and cut to a prefix of it: top_k > 0 keeps the first
//     k; with mx the top logit and w = Weight(l, mx, 1 / temperature), min_p keeps those with
//     w >= min_p; top_p < 1 keeps the shortest prefix of what is left whose weight reaches
//     top_p * Z, Z the weight of the top-k prefix (so top_p is measured in probabilities over the
//     top-k tokens, as the filters apply one after another on one sorted list).
//  4. The draw: u = Uniform(seed, draw) in (0, 1], target = u * (weight of the kept tokens); the kept
//     tokens are walked in ascending id order (not rank order: a GPU finds it with one prefix sum,
//     without sorting) and the first whose running weight reaches target, among those of positive
//     weight, is chosen (the last kept token of positive weight when rounding leaves target above
//     the running total).
//  5. Logprobs are of the raw logits (no penalty, no temperature): l - LogSumExp with the sum of
//     LseTerm taken at the row's max, so a logprob is the same number wherever it is reported.
//
// The draw depends only on the request's seed and the number of tokens it has drawn before, not on a
// generator's state: a preempted and recomputed sequence goes on with the numbers it would have drawn,
// and a batch draws the same numbers as each sequence alone. Float summation order (sequential on the
// host, a tree on the GPU) and the last bits of expf are all that can differ between the backends,
// and they decide a token only where a threshold or the draw falls within rounding of a boundary.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define ATP_HD __host__ __device__
#else
#define ATP_HD
#endif

namespace atp::sampling {

// An unsigned key that orders like the float (larger float, larger key; -0 and +0 equal). A token
// ranks before another when its key is larger, or equal with a lower id. NaN gets a key too (above
// +inf for positive NaN), so that every logit row has a total order.
ATP_HD inline uint32_t OrderKey(float x) {
  uint32_t b;
  memcpy(&b, &x, sizeof b);
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
ATP_HD inline float FromOrderKey(uint32_t k) {
  const uint32_t b = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
  float x;
  memcpy(&x, &b, sizeof x);
  return x;
}
ATP_HD inline bool RanksBefore(uint32_t key_a, int32_t a, uint32_t key_b, int32_t b) {
  return key_a > key_b || (key_a == key_b && a < b);
}

// CTRL's rule: a positive logit is divided by the penalty, a negative one multiplied.
ATP_HD inline float Penalize(float l, float penalty) { return l > 0 ? l / penalty : l * penalty; }

// A token's unnormalized probability at temperature 1 / inv_temp, relative to the top token (weight 1).
ATP_HD inline float Weight(float l, float mx, float inv_temp) { return expf((l - mx) * inv_temp); }

// One term of the log-sum-exp of a row taken at its max mx; LogSumExp = mx + log(sum of the terms).
ATP_HD inline double LseTerm(float l, float mx) { return exp(double(l - mx)); }
ATP_HD inline float LogSumExp(float mx, double sum_of_terms) { return float(double(mx) + log(sum_of_terms)); }

// SplitMix64's output function (Steele, Lea, Flood 2014).
ATP_HD inline uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
// The draw-th number, in (0, 1], of the stream of `seed`: SplitMix64's draw-th output for a state
// started at Mix64(seed), 53 bits. Counter-based, so any draw is computed without the ones before.
ATP_HD inline double Uniform(uint64_t seed, uint64_t draw) {
  const uint64_t kGolden = 0x9e3779b97f4a7c15ull;
  const uint64_t h = Mix64(Mix64(seed + kGolden) + (draw + 1) * kGolden);
  return double((h >> 11) + 1) * (1.0 / 9007199254740992.0);
}

}  // namespace atp::sampling
