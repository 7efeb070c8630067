// Tokenizer::LoadFromDir/LoadFromJson: parses tokenizer.json into HfTokenizer's parts and reads
// BOS/EOS and extra special tokens from tokenizer_config.json. Only "BPE" models are accepted.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/mapped_file.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/json_fields.h"

namespace atp {
namespace {

using nlohmann::json;

Result<json> ParseJson(std::string_view text, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    return Status::Corruption(where + ": invalid JSON: " + e.what());
  }
}

Result<std::vector<AddedToken>> ParseAddedTokens(const json& root) {
  std::vector<AddedToken> out;
  const json* list = jf::Find(root, "added_tokens");
  if (!list) return out;
  if (!list->is_array()) return Status::Corruption("added_tokens: expected an array");
  for (size_t i = 0; i < list->size(); ++i) {
    const std::string path = "added_tokens[" + std::to_string(i) + "]";
    const json& t = (*list)[i];
    AddedToken a;
    ATP_ASSIGN_OR_RETURN(a.content, jf::String(t, "content", path));
    ATP_ASSIGN_OR_RETURN(const json* id, jf::Require(t, "id", path));
    ATP_ASSIGN_OR_RETURN(a.id, jf::TokenId(*id, path + ".id"));
    ATP_ASSIGN_OR_RETURN(a.special, jf::Bool(t, "special", path, false));
    ATP_ASSIGN_OR_RETURN(a.lstrip, jf::Bool(t, "lstrip", path, false));
    ATP_ASSIGN_OR_RETURN(a.rstrip, jf::Bool(t, "rstrip", path, false));
    ATP_ASSIGN_OR_RETURN(a.normalized, jf::Bool(t, "normalized", path, !a.special));
    ATP_ASSIGN_OR_RETURN(a.single_word, jf::Bool(t, "single_word", path, false));
    out.push_back(std::move(a));
  }
  return out;
}

Result<std::unique_ptr<HfTokenizer>> ParseTokenizerJson(const json& root) {
  if (!root.is_object()) return Status::Corruption("expected a JSON object");
  ATP_ASSIGN_OR_RETURN(const json* model, jf::Require(root, "model", ""));
  if (!model->is_object()) return Status::Corruption("model: expected an object");
  // Some older files omit the model type; a BPE model is the one with merges.
  std::string type = "BPE";
  if (jf::Find(*model, "type")) {
    ATP_ASSIGN_OR_RETURN(type, jf::String(*model, "type", "model"));
  } else if (!jf::Find(*model, "merges")) {
    return Status::Unsupported("model.type: missing, and the model has no merges (not BPE)");
  }
  if (type != "BPE") return Status::Unsupported("model.type: '" + type + "' is not supported (only BPE)");

  HfTokenizer::Parts parts;
  ATP_ASSIGN_OR_RETURN(parts.model, Bpe::FromJson(*model, "model"));
  ATP_ASSIGN_OR_RETURN(parts.added, ParseAddedTokens(root));
  if (const json* n = jf::Find(root, "normalizer")) {
    ATP_ASSIGN_OR_RETURN(parts.normalizer, ParseNormalizer(*n, "normalizer"));
  }
  if (const json* p = jf::Find(root, "pre_tokenizer")) {
    ATP_ASSIGN_OR_RETURN(parts.pre_tokenizer, ParsePreTokenizer(*p, "pre_tokenizer"));
  }
  if (const json* d = jf::Find(root, "decoder")) {
    ATP_ASSIGN_OR_RETURN(parts.decoder, ParseDecoder(*d, "decoder"));
  }
  if (const json* pp = jf::Find(root, "post_processor")) {
    auto lookup = [&](std::string_view tok) {
      for (const AddedToken& a : parts.added)
        if (a.content == tok) return a.id;
      return parts.model.TokenToId(tok);
    };
    ATP_ASSIGN_OR_RETURN(parts.post, ParsePostProcessor(*pp, "post_processor", lookup));
  }
  auto tok = std::make_unique<HfTokenizer>(std::move(parts));
  const SpecialTemplate& post = tok->post_template();
  for (const auto* side : {&post.prefix, &post.suffix})
    for (int32_t id : *side)
      if (id >= tok->vocab_size())
        return Status::Corruption("post_processor: id " + std::to_string(id) + " is outside the vocabulary");
  return tok;
}

// A token named in tokenizer_config.json: "text", {"content": "text", ...} or null.
Result<std::optional<std::string>> ConfigToken(const json& cfg, std::string_view key) {
  const json* v = jf::Find(cfg, key);
  if (!v) return std::optional<std::string>();
  if (v->is_string()) return std::optional<std::string>(v->get<std::string>());
  ATP_ASSIGN_OR_RETURN(std::string content, jf::String(*v, "content", std::string(key)));
  return std::optional<std::string>(std::move(content));
}

// BOS/EOS come from the config, else from the post-processor's template (first id before the
// text, last id after it). Other special-token names only widen IsSpecial/skip_special.
Status ApplyConfig(const json& cfg, HfTokenizer& tok) {
  const SpecialTemplate& post = tok.post_template();
  if (!cfg.is_null() && !cfg.is_object()) return Status::Corruption("expected a JSON object");
  auto named_id = [&](std::string_view key) -> Result<int32_t> {
    ATP_ASSIGN_OR_RETURN(std::optional<std::string> name, ConfigToken(cfg, key));
    if (!name) return -1;
    const int32_t id = tok.TokenToId(*name);
    if (id < 0) return Status::Corruption(std::string(key) + ": '" + *name + "' is not in the vocabulary");
    return id;
  };
  ATP_ASSIGN_OR_RETURN(int32_t bos, named_id("bos_token"));
  ATP_ASSIGN_OR_RETURN(int32_t eos, named_id("eos_token"));
  if (bos < 0 && !post.prefix.empty()) bos = post.prefix.front();
  std::vector<int32_t> eos_ids;
  if (eos >= 0)
    eos_ids.push_back(eos);
  else if (!post.suffix.empty())
    eos_ids.push_back(post.suffix.back());

  // transformers counts these names as special (all_special_ids). A name missing from the
  // vocabulary is skipped: transformers would add it as a new token, which no model id can be.
  std::vector<int32_t> extra = eos_ids;
  if (bos >= 0) extra.push_back(bos);
  for (const char* key : {"unk_token", "pad_token", "sep_token", "cls_token", "mask_token"}) {
    ATP_ASSIGN_OR_RETURN(std::optional<std::string> name, ConfigToken(cfg, key));
    if (name && tok.TokenToId(*name) >= 0) extra.push_back(tok.TokenToId(*name));
  }
  if (const json* list = jf::Find(cfg, "additional_special_tokens"); list && list->is_array()) {
    for (const json& item : *list) {
      const json* content = item.is_object() ? jf::Find(item, "content") : &item;
      if (content && content->is_string() && tok.TokenToId(content->get<std::string>()) >= 0)
        extra.push_back(tok.TokenToId(content->get<std::string>()));
    }
  }
  tok.SetSpecialIds(bos, std::move(eos_ids), extra);
  return Status::Ok();
}

Result<std::unique_ptr<Tokenizer>> Load(std::string_view tokenizer_json, std::string_view config_json,
                                        const std::string& tok_where, const std::string& cfg_where) {
  try {
    ATP_ASSIGN_OR_RETURN(json root, ParseJson(tokenizer_json, tok_where));
    auto tok = ParseTokenizerJson(root);
    if (!tok.ok()) return tok.status().WithContext(tok_where + ": ");
    json cfg;
    if (!config_json.empty()) {
      ATP_ASSIGN_OR_RETURN(cfg, ParseJson(config_json, cfg_where));
    }
    ATP_RETURN_IF_ERROR(ApplyConfig(cfg, *tok.value()).WithContext(cfg_where + ": "));
    return std::unique_ptr<Tokenizer>(std::move(tok).value());
  } catch (const json::exception& e) {
    // Every field is type-checked before use; this only guards against a check we missed.
    return Status::Corruption(tok_where + ": " + e.what());
  }
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromJson(std::string_view tokenizer_json,
                                                           std::string_view tokenizer_config_json,
                                                           const std::string& where) {
  return Load(tokenizer_json, tokenizer_config_json, where, where + " (tokenizer_config)");
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromDir(const std::string& dir) {
  const std::string tok_path = dir + "/tokenizer.json";
  const std::string cfg_path = dir + "/tokenizer_config.json";
  ATP_ASSIGN_OR_RETURN(std::string tok_text, ReadFile(tok_path));
  std::string cfg_text;  // the config is optional; an unreadable one is still an error
  if (std::filesystem::exists(cfg_path)) {
    ATP_ASSIGN_OR_RETURN(cfg_text, ReadFile(cfg_path));
  }
  return Load(tok_text, cfg_text, tok_path, cfg_path);
}

}  // namespace atp
