// libFuzzer target: config.json parsing, then what LlamaModel::Load derives from an accepted config
// (head sizes, RoPE frequencies, binding weights against the reference checkpoint when it is present).
#include <cstdint>
#include <memory>
#include <string>

#include "format/safetensors.h"
#include "fuzz_util.h"
#include "model/config.h"
#include "model/weights.h"

namespace {
std::unique_ptr<atp::SafeTensors> g_ref;  // ../shared/models/ref-5m's weights; null without the checkout
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto st = atp::SafeTensors::Open(atp::fuzz::kSharedModels + "/ref-5m");
  if (st.ok()) g_ref = std::move(st).value();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto cfg = atp::ParseModelConfig(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.json");
  if (!cfg.ok()) return 0;
  volatile int64_t sink = int64_t(cfg->q_dim()) + cfg->kv_dim();
  if (g_ref) {
    auto w = atp::BindWeights(*cfg, *g_ref);
    // Only a config that matches the weights reaches the forward pass's setup.
    if (!w.ok()) return 0;
  }
  sink = sink + int64_t(cfg->RopeInvFreq().size());
  return 0;
}
