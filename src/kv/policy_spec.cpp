#include "kv/policy_spec.h"

#include <cerrno>
#include <cstdlib>

namespace atp {

Result<PolicySpec> PolicySpec::Parse(const std::string& text) {
  PolicySpec p;
  size_t colon = text.find(':');
  p.name_ = text.substr(0, colon);
  if (p.name_.empty()) return Status::InvalidArgument("kv policy '" + text + "': missing policy name");
  if (colon == std::string::npos) return p;
  std::string rest = text.substr(colon + 1);
  size_t i = 0;
  while (i <= rest.size()) {
    size_t comma = rest.find(',', i);
    if (comma == std::string::npos) comma = rest.size();
    std::string item = rest.substr(i, comma - i);
    size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      return Status::InvalidArgument("kv policy '" + text + "': expected key=value, got '" + item + "'");
    if (!p.kv_.emplace(item.substr(0, eq), item.substr(eq + 1)).second)
      return Status::InvalidArgument("kv policy '" + text + "': key '" + item.substr(0, eq) + "' given twice");
    i = comma + 1;
  }
  return p;
}

Status PolicySpec::CheckKeys(const std::vector<PolicyKey>& valid) const {
  for (auto& [k, v] : kv_) {
    bool found = false;
    for (auto& pk : valid) found |= k == pk.name;
    if (found) continue;
    std::string msg = "kv policy '" + name_ + "': unknown key '" + k + "'; valid keys: ";
    if (valid.empty()) msg += "(none)";
    for (size_t i = 0; i < valid.size(); ++i) msg += std::string(i ? ", " : "") + valid[i].name + " (" + valid[i].help + ")";
    return Status::InvalidArgument(msg);
  }
  return Status::Ok();
}

Result<int> PolicySpec::Int(const std::string& key, int def, int lo, int hi) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) return def;
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(it->second.c_str(), &end, 10);
  if (errno || *end || end == it->second.c_str() || v < lo || v > hi)
    return Status::InvalidArgument("kv policy '" + name_ + "': " + key + "=" + it->second + " must be an integer in [" +
                                   std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return int(v);
}

Result<double> PolicySpec::Float(const std::string& key, double def, double lo, double hi) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) return def;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(it->second.c_str(), &end);
  if (errno || *end || end == it->second.c_str() || !(v >= lo && v <= hi))
    return Status::InvalidArgument("kv policy '" + name_ + "': " + key + "=" + it->second + " must be a number in [" +
                                   std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

Result<std::string> PolicySpec::Choice(const std::string& key, const std::string& def,
                                       const std::vector<std::string>& allowed) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) return def;
  for (auto& a : allowed)
    if (a == it->second) return a;
  std::string list;
  for (auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  return Status::InvalidArgument("kv policy '" + name_ + "': " + key + "=" + it->second + " is not one of " + list);
}

Result<std::string> PolicySpec::String(const std::string& key, const std::string& def) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? def : it->second;
}

Result<DType> PolicySpec::Dtype(const std::string& key, DType def) const {
  ATP_ASSIGN_OR_RETURN(std::string s, Choice(key, std::string(DTypeName(def)), {"f32", "f16", "bf16"}));
  DType t;
  ParseDType(s, &t);
  return t;
}

}  // namespace atp
