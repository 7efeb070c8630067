// `streaming` (StreamingLLM) on the GPU: the twin of kv/evict_policy.h's streaming policy, its rows
// exact (f32 alone, f16/bf16 through `+dense:dtype=`) or MX (`+mx:fmt=fp8_e4m3|fp4`).
#pragma once
#include <memory>
#include <string>

#include "cuda/attention.h"
#include "kv/kv_policy.h"
#include "kv/policy_spec.h"

namespace atp {

// `policy` is the left side of the CPU factory's canonical string, `rows` the form of its codec;
// `describe` the whole canonical string.
Result<std::shared_ptr<KvPolicyFactory>> MakeCudaStreamingFactory(const PolicySpec& policy, cuda::KvFormat rows,
                                                                  const std::string& describe);

}  // namespace atp
