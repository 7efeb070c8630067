// The `atp` command: one binary, one subcommand per job (docs/design.md section 1).
#include <algorithm>
#include <iostream>
#include <string>

#include "atp_version.h"
#include "cli/common.h"

int main(int argc, char** argv) {
  CLI::App app{"atp: Llama-family inference with pluggable, measured KV-cache policies"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "atp " ATP_VERSION);
  atp::cli::Runner run;
  atp::cli::AddGenerate(app, &run);
  atp::cli::AddPerplexity(app, &run);
  atp::cli::AddInspect(app, &run);
  atp::cli::AddBench(app, &run);
  atp::cli::AddTestgen(app, &run);
  atp::cli::AddServe(app, &run);
  atp::cli::AddCalibrate(app, &run);
  atp::cli::AddAnalyze(app, &run);
  atp::cli::AddEval(app, &run);
  atp::cli::AddChat(app, &run);
  atp::cli::AddConvert(app, &run);
  atp::cli::AddPlot(app, &run);
  if (argc > 1 && argv[1][0] != '-') {  // CLI11 would only say "A subcommand is required"
    std::string names;
    bool known = false;
    for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
      known |= sub->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::cerr << "atp: unknown subcommand '" << argv[1] << "'; valid subcommands: " << names << "\n";
      return static_cast<int>(CLI::ExitCodes::ExtrasError);
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help exits 0 through CLI11; any other usage error is one line on stderr (docs/design.md section 7).
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    std::string where = "atp";
    for (const CLI::App* sub : app.get_subcommands()) where += " " + sub->get_name();
    std::cerr << where << ": " << msg << " (run '" << where << " --help' for usage)\n";
    return e.get_exit_code();
  }
  return run ? run() : 1;
}
