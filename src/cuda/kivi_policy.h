// `kivi` on the GPU: the twin of kv/kivi_codec.h kept by kv/composite.h's codec policy alone.
#pragma once
#include <memory>
#include <string>

#include "kv/kv_policy.h"
#include "kv/policy_config.h"

namespace atp {

// `p` from the one parser (kv/policy_config.h); `describe` the policy's canonical string.
Result<std::shared_ptr<KvPolicyFactory>> MakeCudaKiviFactory(const KiviParams& p, const std::string& describe);

}  // namespace atp
