// libFuzzer target: a bench/server_bench.py report (what `atp plot serving` reads) through ServingPlots;
// every accepted report is drawn.
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "eval/serving_plot.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  auto plots = atp::ServingPlots(j);
  if (!plots.ok()) return 0;
  for (auto& [name, svg] : *plots)
    if (svg.rfind("</svg>\n") != svg.size() - 7) std::abort();  // every figure is a whole SVG document
  return 0;
}
