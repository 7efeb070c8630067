// The host's policies from a parsed policy string (kv/policy_config.h): one factory per family.
#include "kv/atp_policy.h"
#include "kv/composite.h"
#include "kv/dense_policy.h"
#include "kv/evict_policy.h"
#include "kv/kv_policy.h"
#include "kv/lowrank_policy.h"

namespace atp {

std::shared_ptr<KvPolicyFactory> MakeKvFactory(const KvPolicyConfig& config) {
  struct Make {
    std::shared_ptr<KvPolicyFactory> operator()(const RowsParams& p) const {
      if (auto* e = std::get_if<ExactForm>(&p.form)) return MakeDenseFactory(e->dtype);
      return MakeCodecPolicyFactory(p.form);
    }
    std::shared_ptr<KvPolicyFactory> operator()(const AtpParams& p) const { return MakeAtpFactory(p); }
    std::shared_ptr<KvPolicyFactory> operator()(const LowRankParams& p) const { return MakeLowRankFactory(p); }
    std::shared_ptr<KvPolicyFactory> operator()(const EvictParams& p) const { return MakeEvictFactory(p); }
  };
  return std::visit(Make{}, config.params);
}

Result<std::shared_ptr<KvPolicyFactory>> ParseKvPolicy(const std::string& text, const std::string& model_dir) {
  ATP_ASSIGN_OR_RETURN(KvPolicyConfig config, ParseKvConfig(text, model_dir));
  return MakeKvFactory(config);
}

}  // namespace atp
