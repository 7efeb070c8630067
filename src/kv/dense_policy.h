// `dense`: exact post-RoPE keys and values (f32, f16 or bf16), the reference for every other policy.
#pragma once
#include <memory>

#include "kv/kv_policy.h"
#include "core/dtype.h"

namespace atp {

std::shared_ptr<KvPolicyFactory> MakeDenseFactory(DType dtype);

}  // namespace atp
