// `kivi` on the GPU: the twin of kv/kivi_codec.h kept by kv/composite.h's codec policy alone.
#pragma once
#include <memory>
#include <string>

#include "kv/kv_policy.h"
#include "kv/policy_spec.h"

namespace atp {

// `canon` is the CPU factory's canonical string; `describe` its text.
Result<std::shared_ptr<KvPolicyFactory>> MakeCudaKiviFactory(const PolicySpec& canon, const std::string& describe);

}  // namespace atp
