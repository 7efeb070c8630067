// `streaming` (StreamingLLM) on the GPU: the twin of kv/evict_policy.h's streaming policy, its rows
// exact (f32 alone, f16/bf16 through `+dense:dtype=`) or MX (`+mx:fmt=fp8_e4m3|fp4`).
#pragma once
#include <memory>
#include <string>

#include "cuda/attention.h"
#include "kv/kv_policy.h"
#include "kv/policy_config.h"

namespace atp {

// `p` a streaming policy from the one parser (kv/policy_config.h), `rows` the GPU form of its codec;
// `describe` the policy's canonical string.
Result<std::shared_ptr<KvPolicyFactory>> MakeCudaStreamingFactory(const EvictParams& p, cuda::KvFormat rows,
                                                                  const std::string& describe);

}  // namespace atp
