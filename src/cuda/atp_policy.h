// `atp` on the GPU: the twin of kv/atp_policy.h for proj=dense (basis=input or key; keep=, residual=
// and rope=pre of issue 19).
#pragma once
#include <memory>

#include "kv/kv_policy.h"
#include "kv/policy_spec.h"

namespace atp {

// `canon` is the CPU factory's canonical string. Unsupported: proj=lowrank, block > 64, keep=block,
// tau= with basis=key.
Result<std::shared_ptr<KvPolicyFactory>> MakeCudaAtpFactory(const PolicySpec& canon, const std::string& describe);

}  // namespace atp
