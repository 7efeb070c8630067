// `dense`: exact post-RoPE keys and values (f32, f16 or bf16), the reference for every other policy.
#pragma once
#include <memory>

#include "kv/kv_policy.h"
#include "kv/policy_spec.h"

namespace atp {

Result<std::shared_ptr<KvPolicyFactory>> MakeDenseFactory(const PolicySpec& spec);

}  // namespace atp
