// The Llama-family decoder: RMSNorm, RoPE, grouped-query attention handed to a KvPolicy, SwiGLU.
// One forward call runs a batch of token chunks from any number of sequences (prefill chunks and
// decode steps mixed): linear layers see all rows at once, attention goes to each chunk's policies.
// Thread-safety: Forward() uses per-model scratch; one call at a time per model.
#pragma once
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "kv/kv_policy.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace atp {

struct ForwardItem {
  std::span<KvPolicy* const> kv;     // one policy per layer, owned by the sequence
  std::span<const int32_t> tokens;   // new tokens
  int32_t start_pos = 0;             // position of tokens[0]
  bool all_logits = false;           // logits for every token (scoring) or only the last
};

class LlamaModel {
 public:
  // dir: a Hugging Face model directory (config.json + safetensors).
  static Result<std::unique_ptr<LlamaModel>> Load(const std::string& dir);

  const ModelConfig& config() const { return cfg_; }
  const ModelWeights& weights() const { return w_; }
  const SafeTensors& tensors() const { return *st_; }
  const std::string& dir() const { return dir_; }
  KvShape kv_shape(int layer) const;
  size_t weight_bytes() const;  // bytes of all weights read by one decode step

  // Runs the batch; `logits` receives, item after item, vocab_size floats per requested row
  // (all tokens of an item with all_logits, else its last token).
  Status Forward(std::span<const ForwardItem> items, std::vector<float>* logits);

 private:
  LlamaModel() = default;
  std::string dir_;
  ModelConfig cfg_;
  std::unique_ptr<SafeTensors> st_;
  ModelWeights w_;
  std::vector<float> inv_freq_;  // (head_dim/2) RoPE inverse frequencies
};

}  // namespace atp
