// Retrieval accuracy (docs/design.md section 5): a fact is planted early in a long prompt and asked for
// at the end; the model answers greedily after the prompt (encoded with BOS), and a case counts as
// correct when the generated text, stripped of surrounding whitespace, starts with the answer.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "kv/kv_policy.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"

namespace atp {

struct RetrievalCase {
  std::string prompt, answer, kind;
  int prompt_tokens = 0;  // as the file states (informational)
};

// Reads a JSON-lines file of {prompt, answer, kind, prompt_tokens}; errors name the line and field.
Result<std::vector<RetrievalCase>> LoadRetrievalCases(const std::string& path);

struct RetrievalOptions {
  int max_cases = 0;     // 0: all; otherwise the first max_cases (the file interleaves kinds)
  int extra_tokens = 4;  // generated beyond the answer's own token count
};

struct RetrievalCaseResult {
  std::string kind, answer, generated;
  bool correct = false;
};

struct RetrievalResult {
  double accuracy = 0;
  int cases = 0, correct = 0;
  double kv_bytes_per_token = 0;  // Bytes()/Length() after each case, averaged
  std::vector<RetrievalCaseResult> details;
};

// Exact match as defined above.
bool RetrievalMatch(const std::string& generated, const std::string& answer);

// progress(done, total) after each case; may be null.
Result<RetrievalResult> Retrieval(LlamaModel& model, const Tokenizer& tok, const KvPolicyFactory& kv,
                                  const std::vector<RetrievalCase>& cases, const RetrievalOptions& opt,
                                  const std::function<void(int, int)>& progress);

}  // namespace atp
