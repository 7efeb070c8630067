// Parsing of policy strings "name:key=value,key=value": the one place that knows the syntax,
// so every policy reports unknown keys and bad values the same way.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace atp {

struct PolicyKey {
  const char* name;
  const char* help;  // e.g. "block size B (tokens), default 64"
};

class PolicySpec {
 public:
  // Splits "name:k=v,..." ; rejects empty names, missing '=', and repeated keys.
  static Result<PolicySpec> Parse(const std::string& text);

  const std::string& name() const { return name_; }
  // Fails unless every given key is one of `valid` (the message lists them all).
  Status CheckKeys(const std::vector<PolicyKey>& valid) const;

  bool Has(const std::string& key) const { return kv_.count(key) > 0; }
  // Typed getters: the default when absent; an error naming key and range when out of [lo, hi].
  Result<int> Int(const std::string& key, int def, int lo, int hi) const;
  Result<double> Float(const std::string& key, double def, double lo, double hi) const;
  Result<std::string> Choice(const std::string& key, const std::string& def, const std::vector<std::string>& allowed) const;
  Result<std::string> String(const std::string& key, const std::string& def) const;
  Result<DType> Dtype(const std::string& key, DType def) const;

 private:
  std::string name_;
  std::map<std::string, std::string> kv_;
};

}  // namespace atp
