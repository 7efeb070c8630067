// Perplexity under the evaluation protocol (docs/design.md section 5): the token stream is BOS + the
// whole file; window k covers [k*(C+S), (k+1)*(C+S)); the first C tokens are prefilled through the
// policy, the next S are scored one decode step at a time. Only scored tokens count.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "kv/kv_policy.h"
#include "model/llama.h"

namespace atp {

struct PerplexityOptions {
  int context = 384;        // C
  int scored = 128;         // S
  int max_windows = 0;      // 0: all full windows of the file
  bool chunked = false;     // score the S tokens as one causal chunk instead of S decode steps
};

struct PerplexityResult {
  double ppl = 0, nll = 0;  // nll: mean negative log-likelihood per scored token (nats)
  int64_t scored_tokens = 0;
  int windows = 0;
  double kv_bytes_per_token = 0;        // measured Bytes()/Length() at the end of each window, averaged
  double kv_bytes_per_token_dense = 0;  // the `dense` policy (f32) of the same model, for ratios
};

// progress(window_done, windows_total) is called after each window; may be null.
Result<PerplexityResult> Perplexity(LlamaModel& model, const KvPolicyFactory& kv, const std::vector<int32_t>& stream,
                                    const PerplexityOptions& opt, const std::function<void(int, int)>& progress);

}  // namespace atp
