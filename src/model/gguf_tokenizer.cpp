#include "model/gguf_tokenizer.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "tokenizer/tokenizer.h"

namespace atp {

namespace {

using nlohmann::json;
using gguf::Value;
using gguf::ValueType;

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// The pre-tokenizer regexes of the named GGUF pre-tokenizers, exactly as their tokenizer.json files spell them.
constexpr const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

json SplitThenByteLevel(const char* regex) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}}}};
}

// How each named GGUF pre-tokenizer reads as tokenizer.json parts.
struct PreTok {
  std::string name;
  json normalizer, pre_tokenizer;
  bool ignore_merges;
};
std::vector<PreTok> KnownPreTokenizers() {
  const json gpt2 = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", true}};
  return {{"gpt-2", nullptr, gpt2, false},
          {"llama-bpe", nullptr, SplitThenByteLevel(kLlama3Regex), true},
          {"qwen2", {{"type", "NFC"}}, SplitThenByteLevel(kQwen2Regex), false}};
}

// HF's SentencePieceExtractor: every split of every piece into two pieces is a merge, ranked by the
// merged piece's score (higher first; ties keep id order, within a piece by the halves' ids).
std::vector<std::pair<std::string, std::string>> MergesFromScores(const std::vector<std::string>& tokens,
                                                                  const std::vector<float>& scores,
                                                                  const std::map<std::string, int32_t>& ids) {
  struct M { std::string l, r; float score; int32_t il, ir; };
  std::vector<M> all;
  for (size_t t = 0; t < tokens.size(); ++t) {
    const std::string& s = tokens[t];
    std::vector<M> local;
    for (size_t cut = 1; cut < s.size(); ++cut) {
      if ((uint8_t(s[cut]) & 0xC0) == 0x80) continue;  // split between UTF-8 characters only
      auto l = ids.find(s.substr(0, cut)), r = ids.find(s.substr(cut));
      if (l != ids.end() && r != ids.end()) local.push_back({l->first, r->first, scores[t], l->second, r->second});
    }
    std::sort(local.begin(), local.end(), [](const M& a, const M& b) { return std::pair(a.il, a.ir) < std::pair(b.il, b.ir); });
    all.insert(all.end(), local.begin(), local.end());
  }
  std::stable_sort(all.begin(), all.end(), [](const M& a, const M& b) { return a.score > b.score; });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(all.size());
  for (auto& m : all) out.emplace_back(std::move(m.l), std::move(m.r));
  return out;
}

// A comparable summary of a normalizer or pre-tokenizer: the fields that change how text is split.
std::string Canon(const json& j) {
  if (j.is_null()) return "none";
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) return "?";
  const std::string type = j["type"];
  auto flag = [&](const char* key, bool dflt) {
    auto it = j.find(key);
    return it != j.end() && it->is_boolean() ? it->get<bool>() : dflt;
  };
  if (type == "ByteLevel")
    return std::string("ByteLevel(") + (flag("add_prefix_space", true) ? "prefix," : "") +
           (flag("use_regex", true) ? "regex" : "") + ")";
  if (type == "Split")
    return "Split(" + j.value("pattern", json()).dump() + "," + j.value("behavior", json()).dump() + "," +
           (flag("invert", false) ? "invert" : "") + ")";
  for (const char* list : {"pretokenizers", "normalizers"})
    if (type == "Sequence" && j.contains(list) && j[list].is_array()) {
      std::string out;
      for (const json& e : j[list]) out += Canon(e) + "+";
      return out;
    }
  return j.dump();
}

Status SpecialId(const gguf::GgufFile& g, const char* key, size_t n, int64_t* id) {
  ATP_RETURN_IF_ERROR(g.GetInt(key, id));
  if (*id >= int64_t(n) || *id < -1)
    return Status::InvalidArgument("metadata '" + std::string(key) + "' = " + std::to_string(*id) +
                                   " is outside the " + std::to_string(n) + "-token vocabulary");
  return Status::Ok();
}

Result<TokenizerJsonTexts> FromGguf(const gguf::GgufFile& g) {
  std::string model;
  ATP_RETURN_IF_ERROR(g.GetString("tokenizer.ggml.model", &model, true));
  ATP_ASSIGN_OR_RETURN(const std::vector<Value>* tokens, g.GetArray("tokenizer.ggml.tokens", ValueType::kString));
  if (!tokens || tokens->empty()) return Status::InvalidArgument("missing or empty metadata 'tokenizer.ggml.tokens'");
  if (tokens->size() > size_t(1) << 30) return Status::InvalidArgument("tokenizer.ggml.tokens: too many tokens");
  const size_t n = tokens->size();
  ATP_ASSIGN_OR_RETURN(const std::vector<Value>* types, g.GetArray("tokenizer.ggml.token_type", ValueType::kI32));
  if (types && types->size() != n)
    return Status::InvalidArgument("tokenizer.ggml.token_type has " + std::to_string(types->size()) +
                                   " entries for " + std::to_string(n) + " tokens");
  int64_t bos = -1, eos = -1, unk = -1, pad = -1;
  ATP_RETURN_IF_ERROR(SpecialId(g, "tokenizer.ggml.bos_token_id", n, &bos));
  ATP_RETURN_IF_ERROR(SpecialId(g, "tokenizer.ggml.eos_token_id", n, &eos));
  ATP_RETURN_IF_ERROR(SpecialId(g, "tokenizer.ggml.unknown_token_id", n, &unk));
  ATP_RETURN_IF_ERROR(SpecialId(g, "tokenizer.ggml.padding_token_id", n, &pad));
  std::string pre = "default";
  ATP_RETURN_IF_ERROR(g.GetString("tokenizer.ggml.pre", &pre));

  json vocab = json::object(), added = json::array();
  std::map<std::string, int32_t> ids;  // first id of each token text
  for (size_t i = 0; i < n; ++i) {
    const std::string& t = (*tokens)[i].str;
    if (ids.emplace(t, int32_t(i)).second) vocab[t] = int32_t(i);
    const int64_t type = types ? (*types)[i].i : int64_t(kNormal);
    if (type == kControl || type == kUserDefined)
      added.push_back({{"id", i}, {"content", t}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                       {"normalized", false}, {"special", type == kControl}});
  }
  std::vector<std::pair<std::string, std::string>> merges;
  ATP_ASSIGN_OR_RETURN(const std::vector<Value>* merge_list, g.GetArray("tokenizer.ggml.merges", ValueType::kString));
  if (merge_list) {
    for (size_t i = 0; i < merge_list->size(); ++i) {
      const std::string& m = (*merge_list)[i].str;
      const size_t sp = m.find(' ');
      if (sp == std::string::npos)
        return Status::InvalidArgument("tokenizer.ggml.merges[" + std::to_string(i) + "]: expected \"left right\"");
      merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
    }
  }

  json tok = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added}};
  json bpe = {{"type", "BPE"}, {"vocab", vocab}, {"dropout", nullptr}, {"continuing_subword_prefix", nullptr},
              {"end_of_word_suffix", nullptr}};
  bool add_bos = false, add_eos = false;
  if (model == "gpt2") {
    if (!merge_list) return Status::InvalidArgument("missing metadata 'tokenizer.ggml.merges' (needed by gpt2)");
    if (pre == "default") pre = "gpt-2";
    if (pre == "llama3" || pre == "llama-v3") pre = "llama-bpe";
    std::optional<PreTok> found;
    for (PreTok& p : KnownPreTokenizers())
      if (p.name == pre) found = p;
    if (!found)
      return Status::Unsupported("tokenizer.ggml.pre '" + pre + "' (supported: default, gpt-2, llama-bpe, qwen2)");
    tok["normalizer"] = found->normalizer;
    tok["pre_tokenizer"] = found->pre_tokenizer;
    tok["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
    bpe["byte_fallback"] = false;
    bpe["ignore_merges"] = found->ignore_merges;
    add_bos = pre == "llama-bpe";
  } else if (model == "llama") {
    bool space_prefix = true;
    ATP_RETURN_IF_ERROR(g.GetBool("tokenizer.ggml.add_space_prefix", &space_prefix));
    if (!merge_list) {
      ATP_ASSIGN_OR_RETURN(const std::vector<Value>* scores, g.GetArray("tokenizer.ggml.scores", ValueType::kF32));
      if (!scores || scores->size() != n)
        return Status::InvalidArgument("tokenizer.ggml.scores must hold one float32 per token (llama needs "
                                       "scores or merges)");
      std::vector<std::string> texts(n);
      std::vector<float> sc(n);
      for (size_t i = 0; i < n; ++i) texts[i] = (*tokens)[i].str, sc[i] = float((*scores)[i].f);
      merges = MergesFromScores(texts, sc, ids);
    }
    const json replace = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}};
    tok["normalizer"] = space_prefix ? json{{"type", "Sequence"},
                                            {"normalizers", {{{"type", "Prepend"}, {"prepend", kSpace}}, replace}}}
                                     : replace;
    tok["pre_tokenizer"] = nullptr;
    json dec = {{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
                {{"type", "ByteFallback"}},
                {{"type", "Fuse"}}};
    if (space_prefix) dec.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    tok["decoder"] = {{"type", "Sequence"}, {"decoders", dec}};
    bpe["byte_fallback"] = true;
    bpe["fuse_unk"] = true;
    if (unk >= 0) bpe["unk_token"] = (*tokens)[size_t(unk)].str;
    add_bos = true;
  } else {
    return Status::Unsupported("tokenizer.ggml.model '" + model + "' (supported: gpt2, llama)");
  }
  bpe["merges"] = json::array();
  for (auto& [l, r] : merges) bpe["merges"].push_back({l, r});
  tok["model"] = std::move(bpe);

  ATP_RETURN_IF_ERROR(g.GetBool("tokenizer.ggml.add_bos_token", &add_bos));
  ATP_RETURN_IF_ERROR(g.GetBool("tokenizer.ggml.add_eos_token", &add_eos));
  if (add_bos && bos < 0) return Status::InvalidArgument("tokenizer.ggml.add_bos_token is set but there is no bos_token_id");
  if (add_eos && eos < 0) return Status::InvalidArgument("tokenizer.ggml.add_eos_token is set but there is no eos_token_id");
  json single = json::array(), specials = json::object();
  auto special = [&](int64_t id) {
    const std::string& name = (*tokens)[size_t(id)].str;
    specials[name] = {{"id", name}, {"ids", {id}}, {"tokens", {name}}};
    return json{{"SpecialToken", {{"id", name}, {"type_id", 0}}}};
  };
  if (add_bos) single.push_back(special(bos));
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  if (add_eos) single.push_back(special(eos));
  tok["post_processor"] = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", single}, {"special_tokens", specials}};

  json cfg = json::object();
  for (auto [key, id] : {std::pair{"bos_token", bos}, {"eos_token", eos}, {"unk_token", unk}, {"pad_token", pad}})
    if (id >= 0) cfg[key] = (*tokens)[size_t(id)].str;
  std::string chat;
  ATP_RETURN_IF_ERROR(g.GetString("tokenizer.chat_template", &chat));
  if (!chat.empty()) cfg["chat_template"] = chat;
  // Invalid UTF-8 in a token becomes U+FFFD rather than an exception: the loader then sees the same
  // token text a lossy reader would.
  return TokenizerJsonTexts{tok.dump(-1, ' ', false, json::error_handler_t::replace),
                            cfg.dump(-1, ' ', false, json::error_handler_t::replace)};
}

Result<std::vector<std::pair<std::string, Value>>> ToGguf(const std::string& tok_text, const std::string& cfg_text,
                                                          int vocab_size) {
  // The loaded tokenizer is the ground truth for BOS/EOS and for what encoding adds around the text.
  ATP_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> loaded, Tokenizer::LoadFromJson(tok_text, cfg_text, "tokenizer.json"));
  const json root = json::parse(tok_text);
  const json cfg = cfg_text.empty() ? json::object() : json::parse(cfg_text);
  const json& model = root.at("model");
  const bool spm = model.value("byte_fallback", false);

  int32_t max_id = -1;
  for (auto it = model.at("vocab").begin(); it != model.at("vocab").end(); ++it) max_id = std::max(max_id, it->get<int32_t>());
  const json added = root.value("added_tokens", json::array());
  for (const json& a : added) max_id = std::max(max_id, a.at("id").get<int32_t>());
  const size_t n = size_t(std::max(vocab_size, max_id + 1));
  std::vector<Value> tokens(n), types(n);
  std::vector<bool> set(n, false);
  for (auto it = model.at("vocab").begin(); it != model.at("vocab").end(); ++it) {
    const size_t id = size_t(it->get<int32_t>());
    const std::string& t = it.key();
    const bool byte = spm && t.size() == 6 && t.starts_with("<0x") && t.ends_with(">");
    tokens[id] = Value::Str(t), types[id] = Value::I32(byte ? kByte : kNormal), set[id] = true;
  }
  for (const json& a : added) {
    const size_t id = size_t(a.at("id").get<int32_t>());
    tokens[id] = Value::Str(a.at("content").get<std::string>());
    types[id] = Value::I32(a.value("special", false) ? kControl : kUserDefined);
    set[id] = true;
  }
  for (size_t id = 0; id < n; ++id)
    if (!set[id]) tokens[id] = Value::Str("[PAD" + std::to_string(id) + "]"), types[id] = Value::I32(kUnused);
  int64_t unk = -1;
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    unk = loaded->TokenToId(model["unk_token"].get<std::string>());
    if (unk >= 0) types[size_t(unk)] = Value::I32(kUnknown);
  }

  // Merges as "left right" strings; a space inside a half could not be read back.
  std::vector<Value> merges;
  std::map<std::string, size_t> first_rank;  // merged token -> rank of the first merge making it
  for (const json& m : model.at("merges")) {
    std::string l, r;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      l = s.substr(0, sp), r = s.substr(sp + 1);
    } else {
      l = m.at(0).get<std::string>(), r = m.at(1).get<std::string>();
    }
    if (l.find(' ') != std::string::npos || r.find(' ') != std::string::npos)
      return Status::Unsupported("merge '" + l + "' + '" + r + "' contains a space, which GGUF's merges cannot hold");
    first_rank.emplace(l + r, merges.size());
    merges.push_back(Value::Str(l + " " + r));
  }

  std::vector<std::pair<std::string, Value>> md;
  const std::string norm = Canon(root.value("normalizer", json())), pre = Canon(root.value("pre_tokenizer", json()));
  if (spm) {
    const json replace = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}};
    const json prepend = {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", kSpace}}, replace}}};
    const bool space_prefix = norm == Canon(prepend);
    if ((!space_prefix && norm != Canon(replace)) || pre != "none")
      return Status::Unsupported("SentencePiece-style tokenizer.json: only the Prepend/Replace normalizer form "
                                 "without a pre-tokenizer can be written to GGUF");
    std::vector<Value> scores(n);
    for (size_t id = 0; id < n; ++id) {
      auto it = first_rank.find(tokens[id].str);
      // Earlier merges score higher; pieces no merge makes score lowest (llama.cpp never prefers them).
      scores[id] = Value::F32(it == first_rank.end() ? -1e9f : -float(it->second));
    }
    md.emplace_back("tokenizer.ggml.model", Value::Str("llama"));
    md.emplace_back("tokenizer.ggml.add_space_prefix", Value::Bool(space_prefix));
    md.emplace_back("tokenizer.ggml.tokens", Value::Array(ValueType::kString, std::move(tokens)));
    md.emplace_back("tokenizer.ggml.scores", Value::Array(ValueType::kF32, std::move(scores)));
  } else {
    std::string name;
    for (const PreTok& p : KnownPreTokenizers())
      if (Canon(p.pre_tokenizer) == pre && Canon(p.normalizer) == norm && p.ignore_merges == model.value("ignore_merges", false))
        name = p.name;
    if (name.empty())
      return Status::Unsupported("tokenizer.json's normalizer/pre-tokenizer (" + norm + " / " + pre +
                                 ") is none of GGUF's gpt-2, llama-bpe, qwen2");
    md.emplace_back("tokenizer.ggml.model", Value::Str("gpt2"));
    md.emplace_back("tokenizer.ggml.pre", Value::Str(name));
    md.emplace_back("tokenizer.ggml.tokens", Value::Array(ValueType::kString, std::move(tokens)));
  }
  md.emplace_back("tokenizer.ggml.token_type", Value::Array(ValueType::kI32, std::move(types)));
  md.emplace_back("tokenizer.ggml.merges", Value::Array(ValueType::kString, std::move(merges)));

  // What encoding adds around a text: GGUF can say "BOS before" and "EOS after", nothing else.
  const std::vector<int32_t> with = loaded->Encode("a", true), without = loaded->Encode("a", false);
  auto at = std::search(with.begin(), with.end(), without.begin(), without.end());
  const std::vector<int32_t> prefix(with.begin(), at), suffix(at + std::ptrdiff_t(without.size()), with.end());
  const int32_t bos = loaded->bos_id();
  const std::vector<int32_t> eos = loaded->eos_ids();
  if (!(prefix.empty() || (prefix.size() == 1 && prefix[0] == bos)) ||
      !(suffix.empty() || (suffix.size() == 1 && !eos.empty() && suffix[0] == eos[0])))
    return Status::Unsupported("the post-processor adds tokens other than one BOS before and one EOS after the text");
  if (bos >= 0) md.emplace_back("tokenizer.ggml.bos_token_id", Value::U32(uint32_t(bos)));
  if (!eos.empty()) md.emplace_back("tokenizer.ggml.eos_token_id", Value::U32(uint32_t(eos[0])));
  if (unk >= 0) md.emplace_back("tokenizer.ggml.unknown_token_id", Value::U32(uint32_t(unk)));
  if (cfg.contains("pad_token") && cfg["pad_token"].is_string())
    if (int32_t pad = loaded->TokenToId(cfg["pad_token"].get<std::string>()); pad >= 0)
      md.emplace_back("tokenizer.ggml.padding_token_id", Value::U32(uint32_t(pad)));
  md.emplace_back("tokenizer.ggml.add_bos_token", Value::Bool(!prefix.empty()));
  md.emplace_back("tokenizer.ggml.add_eos_token", Value::Bool(!suffix.empty()));
  if (auto it = cfg.find("chat_template"); it != cfg.end()) {
    std::string chat;
    if (it->is_string()) chat = it->get<std::string>();
    else if (it->is_array())
      for (const json& e : *it)
        if (e.is_object() && e.value("name", json()) == "default" && e.value("template", json()).is_string())
          chat = e["template"];
    if (!chat.empty()) md.emplace_back("tokenizer.chat_template", Value::Str(chat));
  }
  return md;
}

}  // namespace

Result<std::vector<std::pair<std::string, Value>>> TokenizerToGguf(const std::string& tokenizer_json,
                                                                   const std::string& config_json, int vocab_size) {
  try {
    return ToGguf(tokenizer_json, config_json, vocab_size);
  } catch (const json::exception& e) {  // the texts loaded as a tokenizer, so this is a field we did not check
    return Status::Corruption(std::string("tokenizer.json: ") + e.what());
  }
}

bool GgufHasTokenizer(const gguf::GgufFile& g) { return g.Find("tokenizer.ggml.model") != nullptr; }

Result<TokenizerJsonTexts> TokenizerJsonFromGguf(const gguf::GgufFile& g) {
  if (!GgufHasTokenizer(g)) return Status::NotFound(g.where() + ": no tokenizer (metadata 'tokenizer.ggml.model')");
  auto r = FromGguf(g);
  if (!r.ok()) return r.status().WithContext(g.where() + ": ");
  return r;
}

}  // namespace atp

namespace atp {

Result<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(const gguf::GgufFile& g, std::string* config_json) {
  ATP_ASSIGN_OR_RETURN(TokenizerJsonTexts t, TokenizerJsonFromGguf(g));
  auto tok = Tokenizer::LoadFromJson(t.tokenizer_json, t.tokenizer_config_json, g.where() + " (tokenizer metadata)");
  if (tok.ok() && config_json) *config_json = std::move(t.tokenizer_config_json);
  return tok;
}

}  // namespace atp
