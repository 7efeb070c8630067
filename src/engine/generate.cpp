#include "engine/generate.h"

#include <algorithm>
#include <chrono>

#include "engine/text_stream.h"

namespace atp {

namespace {
double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
}  // namespace

Result<GenerateResult> Generate(LlamaModel& model, const Tokenizer& tok, const KvPolicyFactory& kv,
                                const std::vector<int32_t>& prompt_ids, const GenerateOptions& opt,
                                const std::function<void(const std::string&)>& on_text) {
  ATP_RETURN_IF_ERROR(opt.sampling.Validate());
  if (prompt_ids.empty()) return Status::InvalidArgument("prompt is empty");
  if (opt.max_tokens < 0) return Status::InvalidArgument("max_tokens must be >= 0");
  for (auto& s : opt.stop)
    if (s.empty()) return Status::InvalidArgument("stop strings must not be empty");
  const int ctx = opt.context > 0 ? opt.context : model.config().max_position;
  if (int(prompt_ids.size()) >= ctx)
    return Status::InvalidArgument("prompt of " + std::to_string(prompt_ids.size()) + " tokens does not fit the context of " +
                                   std::to_string(ctx) + " tokens");

  GenerateResult res;
  res.prompt_ids = prompt_ids;
  Sequence seq(model, kv);
  std::vector<int32_t> history = prompt_ids;
  std::vector<TokenChoice> choice;
  const auto eos = tok.eos_ids();

  double t0 = Now();
  ATP_RETURN_IF_ERROR(RunChunk(model, seq, prompt_ids, false, nullptr));
  res.prefill_seconds = Now() - t0;

  TextStream stream(tok, opt.stop);
  res.finish_reason = "length";
  t0 = Now();
  for (int i = 0; i < opt.max_tokens && seq.length() < ctx; ++i) {
    // Draw i of the seed's stream, as the scheduler numbers them: a request gives the same tokens here.
    const TokenQuery q{0, opt.sampling, history, uint64_t(i), -1};
    ATP_RETURN_IF_ERROR(model.ChooseTokens(std::span<const TokenQuery>(&q, 1), &choice));
    int32_t id = choice[0].id;
    if (opt.stop_at_eos && std::find(eos.begin(), eos.end(), id) != eos.end()) {
      res.finish_reason = "stop";
      break;
    }
    res.token_ids.push_back(id);
    history.push_back(id);
    bool stopped = false;
    const std::string text = stream.Push(id, &stopped);
    if (on_text && !text.empty()) on_text(text);
    res.text += text;
    if (stopped) {
      res.finish_reason = "stop";
      break;
    }
    if (i + 1 == opt.max_tokens || seq.length() + 1 > ctx) break;
    ATP_RETURN_IF_ERROR(RunChunk(model, seq, std::span<const int32_t>(&id, 1), false, nullptr));
  }
  if (res.finish_reason != "stop") {
    const std::string rest = stream.Flush();
    if (on_text && !rest.empty()) on_text(rest);
    res.text += rest;
  }
  res.decode_seconds = Now() - t0;
  res.kv_bytes = seq.kv_bytes();
  return res;
}

}  // namespace atp
