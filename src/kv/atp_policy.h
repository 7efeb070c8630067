// `atp`: attention on top principal keys, made causal for decoders (docs/design.md section 4).
#pragma once
#include <memory>

#include "kv/kv_policy.h"
#include "kv/policy_spec.h"

namespace atp {

Result<std::shared_ptr<KvPolicyFactory>> MakeAtpFactory(const PolicySpec& spec);

// The KIVI group G of residual=kivi2|kivi4|kivi8 for blocks of `rows` summarized tokens (tokens per key
// group, channels per value group): the largest divisor of `rows` up to KIVI's 32, so that no key
// group straddles two blocks (it would wait for the next block, and a query's form would depend on it).
// The GPU twin (cuda/atp_policy.cpp) packs its residuals in the same groups.
int AtpResidualGroup(int rows);

}  // namespace atp
