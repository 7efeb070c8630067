// Model hyper-parameters parsed from a Hugging Face config.json (Llama, Mistral, Qwen2 fields).
// Refuses architectures that are not Llama-family decoders; every missing or absurd field is an error.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace atp {

struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 } type = Type::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;    // llama3 only
  float high_freq_factor = 4.0f;   // llama3 only
  int original_max_position = 8192;  // llama3 only
};

struct ModelConfig {
  std::string model_type;  // "llama", "mistral", "qwen2"
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int vocab_size = 0;
  int max_position = 0;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  // (head_dim/2) divisors of the inverse frequencies, from a GGUF file's rope_freqs tensor (llama.cpp's
  // form of llama3 scaling); empty otherwise.
  std::vector<float> rope_freq_factors;
  bool tie_word_embeddings = false;
  bool attention_bias = false;   // Qwen2: q/k/v biases
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;

  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
  // Inverse frequencies of RoPE for each of head_dim/2 pairs, with rope_scaling applied.
  std::vector<float> RopeInvFreq() const;
};

Result<ModelConfig> ParseModelConfig(std::string_view json_text, const std::string& where);
Result<ModelConfig> LoadModelConfig(const std::string& path);

}  // namespace atp
