// Typed reads of tokenizer.json / tokenizer_config.json fields whose errors name the field's path
// ("pre_tokenizer.pretokenizers[1].type"). Absent and null mean the same, as in Hugging Face's readers.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "core/status.h"

namespace atp::jf {

using nlohmann::json;

inline std::string Join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

// The field, or nullptr when it is absent or null (or obj is not an object).
inline const json* Find(const json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

inline Result<const json*> Require(const json& obj, std::string_view key, const std::string& path) {
  const json* v = Find(obj, key);
  if (!v) return Status::Corruption(Join(path, key) + ": missing");
  return v;
}

inline Result<std::string> String(const json& obj, std::string_view key, const std::string& path) {
  ATP_ASSIGN_OR_RETURN(const json* v, Require(obj, key, path));
  if (!v->is_string()) return Status::Corruption(Join(path, key) + ": expected a string");
  return v->get<std::string>();
}

inline Result<bool> Bool(const json& obj, std::string_view key, const std::string& path, bool fallback) {
  const json* v = Find(obj, key);
  if (!v) return fallback;
  if (!v->is_boolean()) return Status::Corruption(Join(path, key) + ": expected true or false");
  return v->get<bool>();
}

inline Result<int64_t> Int(const json& obj, std::string_view key, const std::string& path) {
  ATP_ASSIGN_OR_RETURN(const json* v, Require(obj, key, path));
  if (!v->is_number_integer()) return Status::Corruption(Join(path, key) + ": expected an integer");
  return v->get<int64_t>();
}

inline Result<const json*> Array(const json& obj, std::string_view key, const std::string& path) {
  ATP_ASSIGN_OR_RETURN(const json* v, Require(obj, key, path));
  if (!v->is_array()) return Status::Corruption(Join(path, key) + ": expected an array");
  return v;
}

// A token id. The bound only stops a corrupt id from sizing tables in gigabytes: the largest real
// vocabularies hold about 256k tokens.
inline Result<int32_t> TokenId(const json& v, const std::string& path) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= (int64_t(1) << 24))
    return Status::Corruption(path + ": expected a token id in [0, 2^24)");
  return v.get<int32_t>();
}

// A component's "type", which selects its parser.
inline Result<std::string> Type(const json& obj, const std::string& path) {
  if (!obj.is_object()) return Status::Corruption(path + ": expected an object");
  return String(obj, "type", path);
}

inline Status UnknownType(const std::string& path, std::string_view what, const std::string& type) {
  return Status::Unsupported(path + ".type: unknown " + std::string(what) + " type '" + type + "'");
}

}  // namespace atp::jf
