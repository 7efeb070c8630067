// `h2o` and `snapkv` on the GPU: the twins of kv/evict_policy.h's, whose rule (kv/evict_rule.h) they
// share; the rows live in device memory, in exact or MX form.
#pragma once
#include <memory>
#include <string>

#include "cuda/attention.h"
#include "kv/kv_policy.h"
#include "kv/policy_config.h"

namespace atp {

// `p` an h2o or snapkv policy from the one parser (kv/policy_config.h), `rows` the GPU form of its
// codec; `describe` the policy's canonical string.
Result<std::shared_ptr<KvPolicyFactory>> MakeCudaEvictFactory(const EvictParams& p, cuda::KvFormat rows,
                                                              const std::string& describe);

}  // namespace atp
