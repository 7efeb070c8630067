// `atp` on the GPU: the twin of kv/atp_policy.h for the paper's form (basis=input, proj=dense).
#pragma once
#include <memory>

#include "kv/kv_policy.h"
#include "kv/policy_spec.h"

namespace atp {

// `canon` is the CPU factory's canonical string. Unsupported: basis=key, proj=lowrank, block > 64.
Result<std::shared_ptr<KvPolicyFactory>> MakeCudaAtpFactory(const PolicySpec& canon, const std::string& describe);

}  // namespace atp
