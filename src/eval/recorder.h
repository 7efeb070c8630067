// A KV policy wrapper that shows every layer's new X, K and V to a callback before handing them to
// the wrapped policy: how calibration and spectra see the model's activations without touching
// the forward pass.
#pragma once
#include <functional>
#include <memory>

#include "kv/kv_policy.h"

namespace atp {

// layer, number of tokens, X (T, d_model), K and V (T, kv_dim) post-RoPE.
using RecordFn = std::function<void(int layer, int64_t T, const float* X, const float* K, const float* V)>;

std::shared_ptr<KvPolicyFactory> MakeRecordingFactory(std::shared_ptr<KvPolicyFactory> inner, RecordFn fn);

}  // namespace atp
