// Single-sequence generation: prefill the prompt, then sample token by token until EOS, a stop
// string, max_tokens or the context limit, streaming decoded text through a callback.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "sampling/params.h"
#include "engine/sequence.h"
#include "tokenizer/tokenizer.h"

namespace atp {

struct GenerateOptions {
  SamplingParams sampling;
  int max_tokens = 128;
  int context = 0;                       // 0: the model's max_position_embeddings
  std::vector<std::string> stop;         // stop strings (not included in the output)
  bool stop_at_eos = true;
};

struct GenerateResult {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> token_ids;        // generated tokens (a stop string's tokens included)
  std::string text;                      // generated text, cut before a stop string
  std::string finish_reason;             // "stop", "length"
  double prefill_seconds = 0, decode_seconds = 0;
  size_t kv_bytes = 0;
};

// on_text receives each new piece of text as it becomes final; may be null.
Result<GenerateResult> Generate(LlamaModel& model, const Tokenizer& tok, const KvPolicyFactory& kv,
                                const std::vector<int32_t>& prompt_ids, const GenerateOptions& opt,
                                const std::function<void(const std::string&)>& on_text);

}  // namespace atp
