// `atp` on the GPU: the twin of kv/atp_policy.h for proj=dense (basis=input or key; keep=, residual=
// and rope=pre of issue 19).
#pragma once
#include <memory>

#include "kv/kv_policy.h"
#include "kv/policy_config.h"

namespace atp {

// `describe` is the policy's canonical string (KvPolicyConfig::Describe). Unsupported: proj=lowrank,
// block > 64, keep=block, tau= with basis=key.
Result<std::shared_ptr<KvPolicyFactory>> MakeCudaAtpFactory(const AtpParams& p, const std::string& describe);

}  // namespace atp
