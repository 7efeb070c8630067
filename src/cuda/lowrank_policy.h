// `lowrank:mode=online` on the GPU: the twin of kv/lowrank_policy.h's online mode.
#pragma once
#include <memory>
#include <string>

#include "kv/kv_policy.h"
#include "kv/policy_config.h"

namespace atp {

// `describe` is the policy's canonical string (KvPolicyConfig::Describe). Unsupported: a codec after
// '+' (the CPU refuses it too) and dtype other than f32.
Result<std::shared_ptr<KvPolicyFactory>> MakeCudaOnlineLowRankFactory(const LowRankParams& p, const std::string& describe);

}  // namespace atp
