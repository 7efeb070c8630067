// Figures of a serving benchmark: what bench/server_bench.py measured against `atp serve` (its JSON
// report), drawn by eval/svg_plot.h in the style of the eval and analyze figures. `atp plot serving`
// writes them.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"

namespace atp {

// {file name, SVG} of the three figures, one series per KV policy against client concurrency on a
// log2 axis: throughput_vs_concurrency.svg (generated tokens/s), ttft_vs_concurrency.svg (time to
// first token, p50 and p99 panels), itl_vs_concurrency.svg (inter-token latency, p50 and p99).
// `report` is server_bench.py's JSON: {"model", "policies": [{"kv", "levels": [{"concurrency",
// "tok_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", ...}]}], ...}; the run's
// parameters (prompt and generated tokens, requests, repeats, machine, load, commit) go into the
// titles where present. A missing figure (null: the level had no successful request) is left out
// of its panel; a malformed report is an InvalidArgument naming the field.
Result<std::vector<std::pair<std::string, std::string>>> ServingPlots(const nlohmann::json& report);

}  // namespace atp
