#include "model/gguf_convert.h"

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/mapped_file.h"
#include "format/gguf_writer.h"
#include "format/safetensors.h"
#include "model/config.h"
#include "model/gguf_model.h"
#include "model/gguf_tokenizer.h"
#include "model/weights.h"

namespace atp {

namespace {

using gguf::GgmlType;
using gguf::Value;

std::vector<std::pair<std::string, Value>> ConfigMetadata(const ModelConfig& c, const std::string& arch,
                                                          const std::string& name, uint32_t file_type) {
  const std::string p = arch + ".";
  std::vector<std::pair<std::string, Value>> md = {
      {"general.architecture", Value::Str(arch)},
      {"general.name", Value::Str(name)},
      {"general.file_type", Value::U32(file_type)},
      {"general.quantization_version", Value::U32(2)},  // ggml's current block formats
      {p + "vocab_size", Value::U32(uint32_t(c.vocab_size))},
      {p + "context_length", Value::U32(uint32_t(c.max_position))},
      {p + "embedding_length", Value::U32(uint32_t(c.hidden_size))},
      {p + "block_count", Value::U32(uint32_t(c.num_layers))},
      {p + "feed_forward_length", Value::U32(uint32_t(c.intermediate_size))},
      {p + "attention.head_count", Value::U32(uint32_t(c.num_heads))},
      {p + "attention.head_count_kv", Value::U32(uint32_t(c.num_kv_heads))},
      {p + "attention.key_length", Value::U32(uint32_t(c.head_dim))},
      {p + "attention.value_length", Value::U32(uint32_t(c.head_dim))},
      {p + "rope.dimension_count", Value::U32(uint32_t(c.head_dim))},
      {p + "rope.freq_base", Value::F32(c.rope_theta)},
      {p + "attention.layer_norm_rms_epsilon", Value::F32(c.rms_norm_eps)},
  };
  if (c.rope_scaling.type == RopeScaling::Type::kLinear) {
    md.emplace_back(p + "rope.scaling.type", Value::Str("linear"));
    md.emplace_back(p + "rope.scaling.factor", Value::F32(c.rope_scaling.factor));
  }
  return md;
}

}  // namespace

Status ConvertToGguf(const std::string& dir, const std::string& out_path, const GgufWeightFormat& format,
                     std::vector<std::string>* log) {
  if (!std::filesystem::is_directory(dir)) return Status::NotFound(dir + ": not a model directory");
  ATP_ASSIGN_OR_RETURN(ModelConfig cfg, LoadModelConfig(dir + "/config.json"));
  ATP_ASSIGN_OR_RETURN(std::unique_ptr<SafeTensors> st, SafeTensors::Open(dir));
  auto bound = BindWeights(cfg, *st);  // every tensor the config implies, with the right shape
  if (!bound.ok()) return bound.status().WithContext(dir + ": ");
  // llama.cpp runs Mistral as arch llama; both get their Q/K rows permuted.
  const std::string arch = cfg.model_type == "qwen2" ? "qwen2" : "llama";
  std::string name = std::filesystem::path(dir).filename().string();
  if (name.empty()) name = std::filesystem::path(dir).parent_path().filename().string();
  auto md = ConfigMetadata(cfg, arch, name, format.file_type);

  const std::string tok_path = dir + "/tokenizer.json", tok_cfg_path = dir + "/tokenizer_config.json";
  if (std::filesystem::exists(tok_path)) {
    ATP_ASSIGN_OR_RETURN(std::string tok_text, ReadFile(tok_path));
    std::string cfg_text;
    if (std::filesystem::exists(tok_cfg_path)) {
      ATP_ASSIGN_OR_RETURN(cfg_text, ReadFile(tok_cfg_path));
    }
    auto tmd = TokenizerToGguf(tok_text, cfg_text, cfg.vocab_size);
    if (!tmd.ok()) return tmd.status().WithContext(tok_path + ": ");
    for (auto& kv : *tmd) md.push_back(std::move(kv));
  }

  std::vector<gguf::TensorToWrite> tensors;
  const bool permute = GgufArchPermutesQK(arch);
  bool has_output = false;
  for (const auto& [hf, view] : st->tensors()) has_output |= HfToGgufName(hf) == "output.weight";
  for (const auto& [hf, view] : st->tensors()) {
    if (hf.ends_with("rotary_emb.inv_freq")) continue;  // a buffer some checkpoints keep; RoPE is recomputed
    const std::string gname = HfToGgufName(hf);
    if (gname.empty()) return Status::Unsupported(dir + ": tensor '" + hf + "' has no GGUF name");
    gguf::TensorToWrite t;
    t.name = gname;
    t.ne.assign(view.shape.rbegin(), view.shape.rend());
    // Vectors stay F32; matrices get the format's type for their name and row length.
    if (view.shape.size() == 1) {
      t.type = GgmlType::kF32;
    } else {
      TensorTypeChoice c = ChooseTensorType(format, gname, view.cols(), view.dtype, cfg.num_layers, has_output);
      t.type = c.type;
      if (log && !c.fallback.empty()) log->push_back(std::move(c.fallback));
    }
    const bool qk = permute && (hf.find("q_proj.") != std::string::npos || hf.find("k_proj.") != std::string::npos);
    const TensorView v = view;
    const int head_dim = cfg.head_dim;
    t.fill = [v, qk, head_dim, out = t.type](uint8_t* dst) -> Status {
      std::vector<float> f(size_t(v.numel()));  // (rows, cols) as in the checkpoint
      ToF32(v.dtype, v.data, f.data(), f.size());
      if (qk) {
        std::vector<float> p(f.size());
        PermuteQKRows(reinterpret_cast<const uint8_t*>(f.data()), reinterpret_cast<uint8_t*>(p.data()), v.rows(),
                      size_t(v.cols()) * sizeof(float), head_dim, /*to_gguf=*/true);
        f.swap(p);
      }
      FromF32(DTypeOfGgml(out), f.data(), dst, f.size());  // blocks: ggml's reference quantizers
      return Status::Ok();
    };
    tensors.push_back(std::move(t));
  }
  if (cfg.rope_scaling.type == RopeScaling::Type::kLlama3) {
    // llama.cpp's form of llama3 scaling: per-frequency divisors in a rope_freqs tensor.
    ModelConfig plain = cfg;
    plain.rope_scaling = RopeScaling();
    const std::vector<float> base = plain.RopeInvFreq(), scaled = cfg.RopeInvFreq();
    auto factors = std::make_shared<std::vector<float>>(base.size());
    for (size_t i = 0; i < base.size(); ++i) (*factors)[i] = base[i] / scaled[i];
    tensors.push_back({"rope_freqs.weight", {int64_t(factors->size())}, GgmlType::kF32, [factors](uint8_t* dst) {
                         std::memcpy(dst, factors->data(), factors->size() * sizeof(float));
                         return Status::Ok();
                       }});
  }
  return gguf::WriteGguf(out_path, md, tensors);
}

namespace {

nlohmann::json ConfigJson(const ModelConfig& c) {
  nlohmann::json j = {{"architectures", {c.model_type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
                      {"model_type", c.model_type},
                      {"hidden_size", c.hidden_size},
                      {"intermediate_size", c.intermediate_size},
                      {"num_hidden_layers", c.num_layers},
                      {"num_attention_heads", c.num_heads},
                      {"num_key_value_heads", c.num_kv_heads},
                      {"head_dim", c.head_dim},
                      {"vocab_size", c.vocab_size},
                      {"max_position_embeddings", c.max_position},
                      {"rms_norm_eps", c.rms_norm_eps},
                      {"rope_theta", c.rope_theta},
                      {"tie_word_embeddings", c.tie_word_embeddings},
                      {"attention_bias", c.attention_bias},
                      {"hidden_act", "silu"}};
  if (c.rope_scaling.type == RopeScaling::Type::kLinear)
    j["rope_scaling"] = {{"type", "linear"}, {"factor", c.rope_scaling.factor}};
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  return j;
}

}  // namespace

Status ConvertFromGguf(const std::string& gguf_path, const std::string& out_dir) {
  ATP_ASSIGN_OR_RETURN(std::shared_ptr<const gguf::GgufFile> g, gguf::GgufFile::Open(gguf_path));
  ATP_ASSIGN_OR_RETURN(ModelConfig cfg, ConfigFromGguf(*g));
  if (!cfg.rope_freq_factors.empty())
    return Status::Unsupported(gguf_path + ": rope_freqs.weight (per-frequency RoPE factors) has no config.json form");
  ATP_ASSIGN_OR_RETURN(std::unique_ptr<SafeTensors> st, TensorsFromGguf(g, cfg));
  auto bound = BindWeights(cfg, *st);
  if (!bound.ok()) return bound.status().WithContext(gguf_path + ": ");
  std::vector<TensorToWrite> tensors;
  for (const auto& [name, v] : st->tensors()) {
    if (GgufToHfName(HfToGgufName(name)) != name)
      return Status::Unsupported(gguf_path + ": tensor '" + name + "' has no Hugging Face name");
    if (IsBlockDType(v.dtype))
      return Status::Unsupported(gguf_path + ": tensor '" + name + "' is " + std::string(DTypeName(v.dtype)) +
                                 ", which safetensors cannot hold (convert from an f32/f16/bf16 GGUF)");
    tensors.push_back({name, v.dtype, v.shape, v.data});
  }
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return Status::IOError(out_dir + ": " + ec.message());
  ATP_RETURN_IF_ERROR(WriteFile(out_dir + "/config.json", ConfigJson(cfg).dump(1) + "\n"));
  ATP_RETURN_IF_ERROR(WriteSafeTensors(out_dir + "/model.safetensors", tensors));
  if (GgufHasTokenizer(*g)) {
    ATP_ASSIGN_OR_RETURN(TokenizerJsonTexts t, TokenizerJsonFromGguf(*g));
    ATP_RETURN_IF_ERROR(WriteFile(out_dir + "/tokenizer.json", t.tokenizer_json));
    ATP_RETURN_IF_ERROR(WriteFile(out_dir + "/tokenizer_config.json", t.tokenizer_config_json));
  }
  return Status::Ok();
}

}  // namespace atp
