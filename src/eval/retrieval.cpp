#include "eval/retrieval.h"

#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "engine/generate.h"

namespace atp {

Result<std::vector<RetrievalCase>> LoadRetrievalCases(const std::string& path) {
  ATP_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::vector<RetrievalCase> cases;
  size_t start = 0;
  for (int line = 1; start < text.size(); ++line) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string s = text.substr(start, end - start);
    start = end + 1;
    if (s.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(line);
    nlohmann::json j = nlohmann::json::parse(s, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return Status::Corruption(where + ": not a JSON object");
    RetrievalCase c;
    for (auto [field, dst] : {std::pair{"prompt", &c.prompt}, {"answer", &c.answer}, {"kind", &c.kind}}) {
      if (!j.contains(field) || !j[field].is_string()) return Status::Corruption(where + ": field '" + field + "' must be a string");
      *dst = j[field].get<std::string>();
    }
    if (c.answer.empty()) return Status::Corruption(where + ": field 'answer' is empty");
    if (j.contains("prompt_tokens") && j["prompt_tokens"].is_number_integer()) c.prompt_tokens = j["prompt_tokens"].get<int>();
    cases.push_back(std::move(c));
  }
  if (cases.empty()) return Status::Corruption(path + ": no cases");
  return cases;
}

bool RetrievalMatch(const std::string& generated, const std::string& answer) {
  const size_t b = generated.find_first_not_of(" \t\r\n");  // leading whitespace stripped
  return b != std::string::npos && generated.compare(b, answer.size(), answer) == 0;
}

Result<RetrievalResult> Retrieval(LlamaModel& model, const Tokenizer& tok, const KvPolicyFactory& kv,
                                  const std::vector<RetrievalCase>& cases, const RetrievalOptions& opt,
                                  const std::function<void(int, int)>& progress) {
  const int n = opt.max_cases > 0 ? std::min<int>(opt.max_cases, int(cases.size())) : int(cases.size());
  RetrievalResult res;
  GenerateOptions g;
  g.sampling.temperature = 0;  // greedy
  g.stop_at_eos = true;
  for (int i = 0; i < n; ++i) {
    const RetrievalCase& c = cases[size_t(i)];
    std::vector<int32_t> ids = tok.Encode(c.prompt, true);
    if (tok.bos_id() >= 0 && (ids.empty() || ids[0] != tok.bos_id())) ids.insert(ids.begin(), tok.bos_id());
    // Enough tokens for the answer (as it would follow the prompt, after a space) and a few more.
    g.max_tokens = int(tok.Encode(" " + c.answer, false).size()) + opt.extra_tokens;
    ATP_ASSIGN_OR_RETURN(GenerateResult r, Generate(model, tok, kv, ids, g, nullptr));
    RetrievalCaseResult d{c.kind, c.answer, r.text, RetrievalMatch(r.text, c.answer)};
    res.correct += d.correct;
    // Tokens in the cache: the prompt and every generated token fed back (the last one is not when
    // generation stopped at max_tokens).
    const size_t held = ids.size() + r.token_ids.size() - (r.finish_reason == "length" && !r.token_ids.empty() ? 1 : 0);
    res.kv_bytes_per_token += double(r.kv_bytes) / double(held);
    res.details.push_back(std::move(d));
    if (progress) progress(i + 1, n);
  }
  res.cases = n;
  res.accuracy = n ? double(res.correct) / n : 0;
  res.kv_bytes_per_token = n ? res.kv_bytes_per_token / n : 0;
  return res;
}

}  // namespace atp
