// `atp`: attention on top principal keys, made causal for decoders (docs/design.md section 4).
#pragma once
#include <memory>

#include "kv/kv_policy.h"
#include "kv/policy_spec.h"

namespace atp {

Result<std::shared_ptr<KvPolicyFactory>> MakeAtpFactory(const PolicySpec& spec);

}  // namespace atp
