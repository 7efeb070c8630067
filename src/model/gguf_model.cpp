#include "model/gguf_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

namespace atp {

namespace {

// Per-layer tensors: Hugging Face suffix after "model.layers.N." and GGUF suffix after "blk.N.".
constexpr std::pair<std::string_view, std::string_view> kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};
constexpr std::pair<std::string_view, std::string_view> kModelNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

// Splits "<prefix><N>.<rest>" into N and rest.
bool SplitLayer(std::string_view name, std::string_view prefix, std::string* layer, std::string_view* rest) {
  if (name.substr(0, prefix.size()) != prefix) return false;
  name.remove_prefix(prefix.size());
  size_t dot = name.find('.');
  if (dot == 0 || dot == std::string_view::npos) return false;
  for (char ch : name.substr(0, dot))
    if (ch < '0' || ch > '9') return false;
  *layer = std::string(name.substr(0, dot));
  *rest = name.substr(dot + 1);
  return true;
}

}  // namespace

namespace {

// One direction of the two name tables: `to_gguf` maps Hugging Face names to GGUF's, else back.
std::string MapTensorName(std::string_view name, bool to_gguf) {
  const auto from = [&](const auto& pair) { return to_gguf ? pair.first : pair.second; };
  const auto to = [&](const auto& pair) { return std::string(to_gguf ? pair.second : pair.first); };
  for (const auto& n : kModelNames)
    if (name == from(n)) return to(n);
  std::string layer;
  std::string_view rest;
  if (SplitLayer(name, to_gguf ? "model.layers." : "blk.", &layer, &rest))
    for (const auto& n : kLayerNames)
      if (rest == from(n)) return (to_gguf ? "blk." : "model.layers.") + layer + "." + to(n);
  return "";
}

}  // namespace

std::string HfToGgufName(std::string_view hf) { return MapTensorName(hf, true); }
std::string GgufToHfName(std::string_view gg) { return MapTensorName(gg, false); }

bool GgufArchPermutesQK(std::string_view arch) { return arch == "llama" || arch == "mistral"; }

void PermuteQKRows(const uint8_t* src, uint8_t* dst, int64_t rows, size_t row_bytes, int head_dim, bool to_gguf) {
  // Within a head, rotate-half row j*half + i (j in {0, 1}) becomes interleaved row 2i + j.
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < rows / head_dim; ++h)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 0; i < half; ++i) {
        const int64_t hf = h * head_dim + j * half + i, gg = h * head_dim + 2 * i + j;
        std::memcpy(dst + size_t(to_gguf ? gg : hf) * row_bytes, src + size_t(to_gguf ? hf : gg) * row_bytes,
                    row_bytes);
      }
}

Result<ModelConfig> ConfigFromGguf(const gguf::GgufFile& g) {
  using nlohmann::json;
  std::string arch;
  ATP_RETURN_IF_ERROR(g.GetString("general.architecture", &arch, true).WithContext(g.where() + ": "));
  if (arch != "llama" && arch != "mistral" && arch != "qwen2")
    return Status::Unsupported(g.where() + ": general.architecture '" + arch + "' (supported: llama, mistral, qwen2)");
  const std::string p = arch + ".";
  // The fields are gathered into config.json form so that one parser checks them all the same way.
  json j = {{"model_type", arch}};
  Status s;
  auto get_int = [&](const std::string& key, const char* field, bool required) {
    int64_t v = 0;
    if (!s.ok()) return;
    s = g.GetInt(key, &v, required);
    if (s.ok() && g.Find(key)) j[field] = v;
  };
  // Head counts and FFN widths may be per-layer arrays (llama.cpp writes them for models whose layers
  // differ): one value when every layer has it, else refused naming two layers that differ.
  auto get_layer_int = [&](const std::string& key, const char* field, bool required) {
    const gguf::Value* v = g.Find(key);
    if (!s.ok() || !v || v->type != gguf::ValueType::kArray) return get_int(key, field, required);
    int64_t first = 0, x = 0;
    if (v->items.empty() || !v->items[0].AsInt(&first)) {
      s = Status::InvalidArgument(key + ": a per-layer array must hold integers, one per layer");
      return;
    }
    for (size_t i = 1; i < v->items.size(); ++i) {
      if (!v->items[i].AsInt(&x)) {
        s = Status::InvalidArgument(key + ": a per-layer array must hold integers, one per layer");
        return;
      }
      if (x != first) {
        s = Status::Unsupported(key + ": per-layer values differ (layer 0: " + std::to_string(first) + ", layer " +
                                std::to_string(i) + ": " + std::to_string(x) +
                                "); atp runs models whose layers all have the same shape");
        return;
      }
    }
    j[field] = first;
  };
  auto get_float = [&](const std::string& key, const char* field) {
    double v = 0;
    if (!s.ok()) return;
    s = g.GetFloat(key, &v);
    if (s.ok() && g.Find(key)) j[field] = v;
  };
  get_int(p + "embedding_length", "hidden_size", true);
  get_layer_int(p + "feed_forward_length", "intermediate_size", true);
  get_int(p + "block_count", "num_hidden_layers", true);
  get_layer_int(p + "attention.head_count", "num_attention_heads", true);
  get_layer_int(p + "attention.head_count_kv", "num_key_value_heads", false);
  get_int(p + "context_length", "max_position_embeddings", false);
  get_int(p + "attention.key_length", "head_dim", false);
  get_int(p + "vocab_size", "vocab_size", false);
  get_float(p + "rope.freq_base", "rope_theta");
  get_float(p + "attention.layer_norm_rms_epsilon", "rms_norm_eps");
  get_int("tokenizer.ggml.bos_token_id", "bos_token_id", false);
  ATP_RETURN_IF_ERROR(s.WithContext(g.where() + ": "));
  std::vector<int64_t> eos;
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"}) {
    int64_t v = -1;
    ATP_RETURN_IF_ERROR(g.GetInt(key, &v).WithContext(g.where() + ": "));
    if (v >= 0 && std::find(eos.begin(), eos.end(), v) == eos.end()) eos.push_back(v);
  }
  if (!eos.empty()) j["eos_token_id"] = eos;

  std::string scaling = "none";
  ATP_RETURN_IF_ERROR(g.GetString(p + "rope.scaling.type", &scaling).WithContext(g.where() + ": "));
  double factor = 1;
  ATP_RETURN_IF_ERROR(g.GetFloat(p + "rope.scaling.factor", &factor).WithContext(g.where() + ": "));
  if (g.Find(p + "rope.scale_linear")) {  // the older spelling of linear scaling
    ATP_RETURN_IF_ERROR(g.GetFloat(p + "rope.scale_linear", &factor).WithContext(g.where() + ": "));
    scaling = "linear";
  }
  if (scaling == "linear") {
    j["rope_scaling"] = {{"type", "linear"}, {"factor", factor}};
  } else if (scaling != "none") {
    return Status::Unsupported(g.where() + ": " + p + "rope.scaling.type '" + scaling + "' (supported: none, linear)");
  }

  const gguf::TensorInfo* embd = g.FindTensor("token_embd.weight");
  if (!j.contains("vocab_size")) {
    if (!embd || embd->ne.size() != 2)
      return Status::InvalidArgument(g.where() + ": no " + p + "vocab_size and no 2-D token_embd.weight to infer it");
    j["vocab_size"] = embd->ne[1];
  }
  j["tie_word_embeddings"] = g.FindTensor("output.weight") == nullptr;
  j["attention_bias"] = g.FindTensor("blk.0.attn_q.bias") != nullptr;
  ATP_ASSIGN_OR_RETURN(ModelConfig c, ParseModelConfig(j.dump(), g.where() + " (metadata as config.json fields)"));

  int64_t rope_dims = c.head_dim, value_len = c.head_dim;
  ATP_RETURN_IF_ERROR(g.GetInt(p + "rope.dimension_count", &rope_dims).WithContext(g.where() + ": "));
  ATP_RETURN_IF_ERROR(g.GetInt(p + "attention.value_length", &value_len).WithContext(g.where() + ": "));
  if (rope_dims != c.head_dim)
    return Status::Unsupported(g.where() + ": " + p + "rope.dimension_count " + std::to_string(rope_dims) +
                               " differs from the head dimension " + std::to_string(c.head_dim) +
                               " (partial rotary embeddings are not supported)");
  if (value_len != c.head_dim)
    return Status::Unsupported(g.where() + ": " + p + "attention.value_length " + std::to_string(value_len) +
                               " differs from attention.key_length " + std::to_string(c.head_dim));
  if (const gguf::TensorInfo* rf = g.FindTensor("rope_freqs.weight")) {
    if (rf->type != gguf::GgmlType::kF32 || rf->ne.size() != 1 || rf->ne[0] != c.head_dim / 2)
      return Status::InvalidArgument(g.where() + ": rope_freqs.weight must be F32 of " +
                                     std::to_string(c.head_dim / 2) + " elements");
    c.rope_freq_factors.resize(size_t(c.head_dim / 2));
    std::memcpy(c.rope_freq_factors.data(), rf->data, c.rope_freq_factors.size() * sizeof(float));
    for (float f : c.rope_freq_factors)
      if (!(f > 0) || !std::isfinite(f))
        return Status::InvalidArgument(g.where() + ": rope_freqs.weight holds a factor that is not > 0");
  }
  return c;
}

Result<std::unique_ptr<SafeTensors>> TensorsFromGguf(std::shared_ptr<const gguf::GgufFile> g, const ModelConfig& cfg) {
  std::map<std::string, TensorView> views;
  std::vector<std::shared_ptr<const void>> owners = {g};
  const bool permute = GgufArchPermutesQK(cfg.model_type);
  for (const gguf::TensorInfo& ti : g->tensors()) {
    TensorView v;
    v.dtype = DTypeOfGgml(ti.type);
    v.shape.assign(ti.ne.rbegin(), ti.ne.rend());
    v.data = ti.data;
    std::string name = GgufToHfName(ti.name);
    if (name.empty()) name = ti.name;
    const bool qk = name.find("self_attn.q_proj.") != std::string::npos ||
                    name.find("self_attn.k_proj.") != std::string::npos;
    if (permute && qk) {
      if (v.rows() % cfg.head_dim != 0)
        return Status::InvalidArgument(g->where() + ": tensor '" + ti.name + "' has " + std::to_string(v.rows()) +
                                       " rows, not whole heads of " + std::to_string(cfg.head_dim));
      auto buf = std::make_shared<std::vector<uint8_t>>(ti.nbytes);
      PermuteQKRows(ti.data, buf->data(), v.rows(), size_t(ti.nbytes / uint64_t(v.rows())), cfg.head_dim,
                    /*to_gguf=*/false);
      v.data = buf->data();
      owners.push_back(buf);
    }
    if (!views.emplace(name, v).second)
      return Status::Corruption(g->where() + ": two tensors map to '" + name + "'");
  }
  return SafeTensors::FromViews(std::move(views), std::move(owners));
}

}  // namespace atp
