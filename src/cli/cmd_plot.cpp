// `atp plot`: figures drawn from results that other tools measured, in the style of `atp eval`'s.
// `atp plot serving RESULTS.json` draws bench/server_bench.py's JSON (eval/serving_plot.h).
#include <filesystem>
#include <iostream>

#include "cli/common.h"
#include "core/mapped_file.h"
#include "eval/serving_plot.h"

namespace atp::cli {

void AddPlot(CLI::App& app, Runner* run) {
  struct Opts {
    std::string results, out;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("plot", "draw SVG figures from results measured elsewhere (see its subcommands)");
  cmd->require_subcommand(1);
  auto* serving = cmd->add_subcommand(
      "serving",
      "bench/server_bench.py's JSON as throughput, TTFT and inter-token latency (p50, p99) against client "
      "concurrency, one series per KV policy: throughput_vs_concurrency.svg, ttft_vs_concurrency.svg, "
      "itl_vs_concurrency.svg");
  serving->add_option("results", o->results, "the JSON report of bench/server_bench.py (--json)")->required();
  serving->add_option("-o,--out", o->out, "directory for the SVG files (default: the one holding RESULTS)");
  serving->callback([o, run] {
    *run = [o]() -> int {
      auto text = ReadFile(o->results);
      if (!text.ok()) return Fail("plot serving", text.status());
      const nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
      if (j.is_discarded()) return Fail("plot serving", Status::InvalidArgument(o->results + ": not valid JSON"));
      auto plots = ServingPlots(j);
      if (!plots.ok()) return Fail("plot serving", plots.status().WithContext(o->results + ": "));
      std::string dir = o->out.empty() ? std::filesystem::path(o->results).parent_path().string() : o->out;
      if (dir.empty()) dir = ".";
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (ec) return Fail("plot serving", Status::IOError(dir + ": cannot create directory: " + ec.message()));
      for (auto& [name, svg] : *plots) {
        Status w = WriteFile(dir + "/" + name, svg);
        if (!w.ok()) return Fail("plot serving", w);
        std::cerr << "atp plot serving: wrote " << dir << "/" << name << "\n";
      }
      return 0;
    };
  });
}

}  // namespace atp::cli
