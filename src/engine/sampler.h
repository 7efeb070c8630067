// Turns logits into the next token: repetition penalty, temperature, top-k, top-p, min-p, seeded RNG.
// temperature 0 is greedy (argmax, lowest id on ties) and ignores the other filters.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "core/status.h"

namespace atp {

struct SamplingParams {
  float temperature = 0.8f;
  int top_k = 40;              // 0: off
  float top_p = 0.95f;         // 1: off
  float min_p = 0.05f;         // 0: off
  float repetition_penalty = 1.0f;  // 1: off; divides positive logits, multiplies negative (CTRL rule)
  uint64_t seed = 0;

  Status Validate() const;  // names the parameter that is out of range
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {}
  // history: tokens already in the sequence (prompt and generated), for the repetition penalty.
  int32_t Sample(std::span<const float> logits, std::span<const int32_t> history);
  // log-softmax of the unmodified logits at `id`, for logprobs reports.
  static float LogProb(std::span<const float> logits, int32_t id);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;  // scratch
};

}  // namespace atp
