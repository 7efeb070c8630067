// Offline bases for the `lowrank` policy: principal directions of post-RoPE keys and of values per
// layer and KV head, from the second-moment matrix K^T K (V^T V) over windows of a calibration text.
#pragma once
#include <functional>
#include <vector>

#include "format/basis_file.h"
#include "model/llama.h"

namespace atp {

struct CalibrateOptions {
  int window = 512;       // tokens per forward window
  int max_windows = 32;   // 0: every full window of the text
};

Result<KvBasis> Calibrate(LlamaModel& model, const std::vector<int32_t>& stream, const CalibrateOptions& opt,
                          const std::function<void(int, int)>& progress);

}  // namespace atp
