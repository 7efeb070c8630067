// What a caller asks of the next token of a sequence (SamplingParams, TokenQuery) and what it gets
// back (TokenChoice). Below both the engine, which asks, and the backends that answer
// (LlamaModel::ChooseTokens on the CPU, src/cuda on the GPU); the rules themselves: sampling/rules.h.
#pragma once
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "core/status.h"

namespace atp {

struct SamplingParams {
  float temperature = 0.8f;         // 0: greedy (argmax, lowest id on ties), the other filters ignored
  int top_k = 40;                   // 0: off
  float top_p = 0.95f;              // 1: off
  float min_p = 0.05f;              // 0: off
  float repetition_penalty = 1.0f;  // 1: off; divides positive logits, multiplies negative (CTRL rule)
  uint64_t seed = 0;

  Status Validate() const;  // names the parameter that is out of range
};

// Most top logprobs a query may ask for (OpenAI's limit, which the server enforces too).
constexpr int kMaxTopLogprobs = 20;

// The next token of one row of logits.
struct TokenQuery {
  int32_t row = 0;                    // which logit row of the last forward pass
  SamplingParams params;
  std::span<const int32_t> history;   // tokens already in the sequence, for the repetition penalty
  uint64_t draw = 0;                  // which number of the seed's stream: tokens the sequence drew before
  int top_logprobs = -1;              // -1: no logprobs; n in [0, kMaxTopLogprobs]: the chosen token's and the n best

  // InvalidArgument naming the problem: a row outside [0, rows), parameters out of range, top_logprobs
  // outside [-1, kMaxTopLogprobs].
  Status Check(int64_t rows) const;
};

struct TokenChoice {
  int32_t id = 0;
  float logprob = 0;                          // log-softmax of the raw logits at id (with top_logprobs >= 0)
  std::vector<std::pair<int32_t, float>> top; // the top_logprobs best tokens, best first, with their logprobs
};

}  // namespace atp
