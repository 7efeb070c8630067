// `atp`: attention on top principal keys, made causal for decoders (docs/design.md section 4).
#pragma once
#include <memory>

#include "kv/kv_policy.h"
#include "kv/policy_config.h"

namespace atp {

std::shared_ptr<KvPolicyFactory> MakeAtpFactory(const AtpParams& p);

}  // namespace atp
