// A KV policy wrapper that shows every layer's new X, K and V to a callback before handing them to
// the wrapped policy: how calibration and spectra see the model's activations without touching
// the forward pass.
#pragma once
#include <functional>
#include <memory>

#include "kv/kv_policy.h"
#include "model/llama.h"

namespace atp {

// layer, number of tokens, X (T, d_model), K and V (T, kv_dim) post-RoPE.
using RecordFn = std::function<void(int layer, int64_t T, const float* X, const float* K, const float* V)>;

std::shared_ptr<KvPolicyFactory> MakeRecordingFactory(std::shared_ptr<KvPolicyFactory> inner, RecordFn fn);

// Runs consecutive windows of `window` tokens of `stream` (at most max_windows; 0: all) through the
// model with a dense cache, showing every layer's X, K, V to `fn`. after_window(done, total) runs
// after each window; a failed Status from it stops the run. `who` names the caller in errors.
// Returns the number of windows run.
Result<int> RecordWindows(LlamaModel& model, const std::vector<int32_t>& stream, int window, int max_windows,
                          const std::string& who, RecordFn fn, const std::function<Status(int, int)>& after_window);

}  // namespace atp
