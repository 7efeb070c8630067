// The host's token choice: the rules of sampling/rules.h over one row of logits, and the log-softmax
// that perplexity scores with. The CPU backend's LlamaModel::ChooseTokens runs it; the GPU's
// cuda/sample.cu implements the same rules with block-wide kernels and is tested against it.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "sampling/params.h"

namespace atp {

class HostChooser {
 public:
  // logits: one row (vocab floats, unmodified); q as TokenQuery::Check accepts it (its row is the
  // caller's business). Allocates only to grow its scratch.
  TokenChoice Choose(std::span<const float> logits, const TokenQuery& q);

 private:
  struct Cand {
    uint32_t key;
    int32_t id;
    float w;
  };
  int32_t Draw(std::span<const float> l, const TokenQuery& q);
  void Logprobs(std::span<const float> raw, int n, TokenChoice* out);
  std::vector<float> pen_;   // the row with the repetition penalty applied
  std::vector<Cand> cand_;
};

// The first token in rank order: largest logit, lowest id among equal ones (greedy decoding).
int32_t TopToken(std::span<const float> logits);
// log-softmax of the unmodified logits at `id`, for perplexity.
float LogProb(std::span<const float> logits, int32_t id);

}  // namespace atp
