#include "eval/perplexity.h"

#include <cmath>

#include "engine/sequence.h"
#include "sampling/choose.h"

namespace atp {

Result<PerplexityResult> Perplexity(LlamaModel& model, const KvPolicyFactory& kv, const std::vector<int32_t>& stream,
                                    const PerplexityOptions& opt, const std::function<void(int, int)>& progress) {
  if (opt.context < 1 || opt.scored < 1) return Status::InvalidArgument("context and scored tokens must be >= 1");
  const int W = opt.context + opt.scored;
  if (W > model.config().max_position)
    return Status::InvalidArgument("context + scored = " + std::to_string(W) + " exceeds the model's max_position_embeddings " +
                                   std::to_string(model.config().max_position));
  int windows = int(stream.size() / size_t(W));
  if (opt.max_windows > 0) windows = std::min(windows, opt.max_windows);
  if (windows == 0)
    return Status::InvalidArgument("text has " + std::to_string(stream.size()) + " tokens, fewer than one window of " +
                                   std::to_string(W));
  const int V = model.config().vocab_size;
  PerplexityResult res;
  res.windows = windows;
  double nll = 0, bytes_per_tok = 0;
  std::vector<float> logits;
  for (int w = 0; w < windows; ++w) {
    const int32_t* win = stream.data() + size_t(w) * size_t(W);
    Sequence seq(model, kv);
    ATP_RETURN_IF_ERROR(RunChunk(model, seq, std::span<const int32_t>(win, size_t(opt.context)), false, &logits));
    // logits now predict win[C]; each step feeds the token just scored.
    auto score = [&](const float* l, int32_t target) { nll -= LogProb(std::span<const float>(l, size_t(V)), target); };
    score(logits.data(), win[opt.context]);
    if (opt.chunked) {
      if (opt.scored > 1) {
        ATP_RETURN_IF_ERROR(RunChunk(model, seq, std::span<const int32_t>(win + opt.context, size_t(opt.scored - 1)), true, &logits));
        for (int i = 1; i < opt.scored; ++i) score(&logits[size_t(i - 1) * size_t(V)], win[opt.context + i]);
      }
    } else {
      for (int i = 1; i < opt.scored; ++i) {
        ATP_RETURN_IF_ERROR(RunChunk(model, seq, std::span<const int32_t>(win + opt.context + i - 1, 1), false, &logits));
        score(logits.data(), win[opt.context + i]);
      }
    }
    res.scored_tokens += opt.scored;
    bytes_per_tok += double(seq.kv_bytes()) / seq.length();
    if (progress) progress(w + 1, windows);
  }
  res.nll = nll / double(res.scored_tokens);
  res.ppl = std::exp(res.nll);
  res.kv_bytes_per_token = bytes_per_tok / windows;
  const ModelConfig& c = model.config();
  res.kv_bytes_per_token_dense = 2.0 * c.kv_dim() * sizeof(float) * c.num_layers;
  return res;
}

}  // namespace atp
