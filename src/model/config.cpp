#include "model/config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/mapped_file.h"

namespace atp {

using nlohmann::json;

namespace {

// Reads an integer field; `required` fields must be present and positive.
Status GetInt(const json& j, const char* key, bool required, int* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    return required ? Status::InvalidArgument(std::string("missing field '") + key + "'") : Status::Ok();
  }
  if (!it->is_number_integer()) return Status::InvalidArgument(std::string("field '") + key + "' must be an integer");
  int64_t v = it->get<int64_t>();
  if (v < 0 || v > (int64_t(1) << 30)) return Status::InvalidArgument(std::string("field '") + key + "' out of range: " + std::to_string(v));
  *out = int(v);
  return Status::Ok();
}

// Reads an optional string field; a present field of another JSON type is an error naming it.
Status GetString(const json& j, const char* key, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();
  if (!it->is_string()) return Status::InvalidArgument(std::string("field '") + key + "' must be a string");
  *out = it->get<std::string>();
  return Status::Ok();
}

Status GetFloat(const json& j, const char* key, float* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();
  if (!it->is_number()) return Status::InvalidArgument(std::string("field '") + key + "' must be a number");
  *out = it->get<float>();
  return Status::Ok();
}

Status GetBool(const json& j, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();
  if (!it->is_boolean()) return Status::InvalidArgument(std::string("field '") + key + "' must be true or false");
  *out = it->get<bool>();
  return Status::Ok();
}

// bos/eos ids may be an int or a list of ints (Llama-3.1 lists several EOS ids).
Status GetIds(const json& j, const char* key, std::vector<int>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();
  auto bad = [&] { return Status::InvalidArgument(std::string("field '") + key + "' must be an integer or a list of integers"); };
  if (it->is_number_integer()) {
    out->push_back(it->get<int>());
  } else if (it->is_array()) {
    for (auto& e : *it) {
      if (!e.is_number_integer()) return bad();
      out->push_back(e.get<int>());
    }
  } else {
    return bad();
  }
  return Status::Ok();
}

Status ParseRopeScaling(const json& j, RopeScaling* rs) {
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return Status::Ok();
  if (!it->is_object()) return Status::InvalidArgument("field 'rope_scaling' must be an object");
  std::string type;
  ATP_RETURN_IF_ERROR(GetString(*it, "type", &type).WithContext("rope_scaling: "));
  ATP_RETURN_IF_ERROR(GetString(*it, "rope_type", &type).WithContext("rope_scaling: "));
  if (type == "linear") rs->type = RopeScaling::Type::kLinear;
  else if (type == "llama3") rs->type = RopeScaling::Type::kLlama3;
  else if (type == "default" || type.empty()) return Status::Ok();
  else return Status::Unsupported("rope_scaling type '" + type + "' (supported: linear, llama3)");
  ATP_RETURN_IF_ERROR(GetFloat(*it, "factor", &rs->factor).WithContext("rope_scaling: "));
  ATP_RETURN_IF_ERROR(GetFloat(*it, "low_freq_factor", &rs->low_freq_factor).WithContext("rope_scaling: "));
  ATP_RETURN_IF_ERROR(GetFloat(*it, "high_freq_factor", &rs->high_freq_factor).WithContext("rope_scaling: "));
  ATP_RETURN_IF_ERROR(
      GetInt(*it, "original_max_position_embeddings", false, &rs->original_max_position).WithContext("rope_scaling: "));
  if (!(rs->factor > 0)) return Status::InvalidArgument("rope_scaling.factor must be > 0");
  if (rs->type == RopeScaling::Type::kLlama3) {
    // The llama3 rule divides by (high - low) and by the wavelength bounds: they must be ordered and positive.
    if (!(rs->low_freq_factor > 0) || !(rs->high_freq_factor > rs->low_freq_factor) || rs->original_max_position <= 0)
      return Status::InvalidArgument(
          "rope_scaling: llama3 needs 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0");
  }
  return Status::Ok();
}

Status Parse(const json& j, ModelConfig* c) {
  if (!j.is_object()) return Status::InvalidArgument("top level must be a JSON object");
  ATP_RETURN_IF_ERROR(GetString(j, "model_type", &c->model_type));
  if (c->model_type != "llama" && c->model_type != "mistral" && c->model_type != "qwen2")
    return Status::Unsupported("unknown model_type '" + c->model_type + "' (supported: llama, mistral, qwen2)");
  ATP_RETURN_IF_ERROR(GetInt(j, "hidden_size", true, &c->hidden_size));
  ATP_RETURN_IF_ERROR(GetInt(j, "intermediate_size", true, &c->intermediate_size));
  ATP_RETURN_IF_ERROR(GetInt(j, "num_hidden_layers", true, &c->num_layers));
  ATP_RETURN_IF_ERROR(GetInt(j, "num_attention_heads", true, &c->num_heads));
  c->num_kv_heads = c->num_heads;
  ATP_RETURN_IF_ERROR(GetInt(j, "num_key_value_heads", false, &c->num_kv_heads));
  ATP_RETURN_IF_ERROR(GetInt(j, "vocab_size", true, &c->vocab_size));
  c->max_position = 2048;
  ATP_RETURN_IF_ERROR(GetInt(j, "max_position_embeddings", false, &c->max_position));
  ATP_RETURN_IF_ERROR(GetFloat(j, "rms_norm_eps", &c->rms_norm_eps));
  ATP_RETURN_IF_ERROR(GetFloat(j, "rope_theta", &c->rope_theta));
  ATP_RETURN_IF_ERROR(ParseRopeScaling(j, &c->rope_scaling));
  ATP_RETURN_IF_ERROR(GetBool(j, "tie_word_embeddings", &c->tie_word_embeddings));
  c->attention_bias = c->model_type == "qwen2";  // Qwen2 always has q/k/v biases
  ATP_RETURN_IF_ERROR(GetBool(j, "attention_bias", &c->attention_bias));
  std::vector<int> bos;
  ATP_RETURN_IF_ERROR(GetIds(j, "bos_token_id", &bos));
  if (!bos.empty()) c->bos_token_id = bos[0];
  ATP_RETURN_IF_ERROR(GetIds(j, "eos_token_id", &c->eos_token_ids));

  for (auto [v, name] : {std::pair{c->hidden_size, "hidden_size"}, {c->intermediate_size, "intermediate_size"},
                         {c->num_layers, "num_hidden_layers"}, {c->num_heads, "num_attention_heads"},
                         {c->num_kv_heads, "num_key_value_heads"}, {c->vocab_size, "vocab_size"},
                         {c->max_position, "max_position_embeddings"}}) {
    if (v <= 0) return Status::InvalidArgument(std::string("field '") + name + "' must be > 0");
  }
  if (c->num_heads % c->num_kv_heads != 0)
    return Status::InvalidArgument("num_attention_heads (" + std::to_string(c->num_heads) +
                                   ") must be a multiple of num_key_value_heads (" + std::to_string(c->num_kv_heads) + ")");
  c->head_dim = c->hidden_size / c->num_heads;
  ATP_RETURN_IF_ERROR(GetInt(j, "head_dim", false, &c->head_dim));
  if (c->head_dim <= 0 || c->head_dim % 2 != 0)
    return Status::InvalidArgument("head_dim must be even and > 0, got " + std::to_string(c->head_dim));
  // q_dim() and kv_dim() are ints (kv_dim <= q_dim): the product must fit, with the same bound as one field.
  if (int64_t(c->num_heads) * c->head_dim > (int64_t(1) << 30))
    return Status::InvalidArgument("num_attention_heads * head_dim = " +
                                   std::to_string(int64_t(c->num_heads) * c->head_dim) + " is out of range");
  if (!(c->rms_norm_eps > 0) || !(c->rope_theta > 0))
    return Status::InvalidArgument("rms_norm_eps and rope_theta must be > 0");
  return Status::Ok();
}

}  // namespace

std::vector<float> ModelConfig::RopeInvFreq() const {
  int half = head_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) inv[i] = float(1.0 / std::pow(double(rope_theta), 2.0 * i / head_dim));
  if (rope_freq_factors.size() == inv.size())
    for (int i = 0; i < half; ++i) inv[i] /= rope_freq_factors[i];
  const RopeScaling& rs = rope_scaling;
  if (rs.type == RopeScaling::Type::kLinear) {
    for (float& f : inv) f /= rs.factor;
  } else if (rs.type == RopeScaling::Type::kLlama3) {
    // Same piecewise rule as transformers' _compute_llama3_parameters.
    double low_wavelen = rs.original_max_position / rs.low_freq_factor;
    double high_wavelen = rs.original_max_position / rs.high_freq_factor;
    for (float& f : inv) {
      double wavelen = 2 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = float(f / rs.factor);
      } else if (wavelen >= high_wavelen) {
        double smooth = (rs.original_max_position / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        f = float((1 - smooth) * f / rs.factor + smooth * f);
      }
    }
  }
  return inv;
}

Result<ModelConfig> ParseModelConfig(std::string_view text, const std::string& where) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument(where + ": invalid JSON");
  ModelConfig c;
  Status s;
  try {
    s = Parse(j, &c);
  } catch (const json::exception& e) {  // a field of the wrong JSON type inside value()
    s = Status::InvalidArgument(std::string("wrong field type: ") + e.what());
  }
  if (!s.ok()) return s.WithContext(where + ": ");
  return c;
}

Result<ModelConfig> LoadModelConfig(const std::string& path) {
  ATP_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseModelConfig(text, path);
}

}  // namespace atp
