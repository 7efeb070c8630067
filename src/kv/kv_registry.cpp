// The table of policy names: the one place a new policy is registered.
#include <functional>

#include "kv/atp_policy.h"
#include "kv/dense_policy.h"
#include "kv/kv_policy.h"
#include "kv/lowrank_policy.h"
#include "kv/policy_spec.h"

namespace atp {

namespace {

struct Entry {
  const char* name;
  std::function<Result<std::shared_ptr<KvPolicyFactory>>(const PolicySpec&, const std::string& model_dir)> make;
};

const std::vector<Entry>& Registry() {
  static const std::vector<Entry> kEntries = {
      {"dense", [](const PolicySpec& s, const std::string&) { return MakeDenseFactory(s); }},
      {"atp", [](const PolicySpec& s, const std::string&) { return MakeAtpFactory(s); }},
      {"lowrank", [](const PolicySpec& s, const std::string& dir) { return MakeLowRankFactory(s, dir); }},
  };
  return kEntries;
}

}  // namespace

Result<std::shared_ptr<KvPolicyFactory>> ParseKvPolicy(const std::string& text, const std::string& model_dir) {
  ATP_ASSIGN_OR_RETURN(PolicySpec spec, PolicySpec::Parse(text));
  for (auto& e : Registry())
    if (spec.name() == e.name) return e.make(spec, model_dir);
  std::string names;
  for (auto& e : Registry()) names += (names.empty() ? "" : ", ") + std::string(e.name);
  return Status::InvalidArgument("unknown kv policy '" + spec.name() + "'; valid policies: " + names);
}

}  // namespace atp
