// The `atp` command: one binary, one subcommand per job (DESIGN.md section 1).
#include <iostream>

#include "cli/common.h"

int main(int argc, char** argv) {
  CLI::App app{"atp: Llama-family inference with pluggable, measured KV-cache policies"};
  app.require_subcommand(1);
  atp::cli::Runner run;
  atp::cli::AddGenerate(app, &run);
  atp::cli::AddPerplexity(app, &run);
  atp::cli::AddInspect(app, &run);
  atp::cli::AddBench(app, &run);
  atp::cli::AddTestgen(app, &run);
  atp::cli::AddCalibrate(app, &run);
  atp::cli::AddAnalyze(app, &run);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return run ? run() : 1;
}
