// `atp calibrate`: per-layer, per-KV-head key and value bases for the `lowrank` policy.
#include <iostream>

#include "cli/common.h"
#include "core/mapped_file.h"
#include "eval/calibrate.h"
#include "eval/report.h"
#include "format/basis_file.h"

namespace atp::cli {

void AddCalibrate(CLI::App& app, Runner* run) {
  struct Opts {
    CommonFlags f;
    std::string file, out;
    bool into_model = false;
    CalibrateOptions c;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("calibrate", "compute lowrank KV bases from a calibration text (use text other than your evaluation text)");
  AddModelFlags(cmd, &o->f, false);
  cmd->add_option("-f,--file", o->file, "calibration text")->required();
  auto* out = cmd->add_option("-o,--out", o->out,
                              "output file (default: NAME.kv_basis.safetensors in the current directory, NAME the "
                              "model's directory or file name)");
  cmd->add_flag("--into-model", o->into_model,
                "write MODEL/kv_basis.safetensors (MODEL.kv_basis.safetensors for a .gguf), where `--kv lowrank` without file= looks")
      ->excludes(out);
  cmd->add_option("--window", o->c.window, "tokens per forward window")->capture_default_str();
  cmd->add_option("--max-windows", o->c.max_windows, "windows to use (0: all)")->capture_default_str();
  cmd->callback([o, run] {
    *run = [o]() -> int {
      auto l = Load(o->f, true);
      if (!l.ok()) return Fail("calibrate", l.status());
      auto text = ReadFile(o->file);
      if (!text.ok()) return Fail("calibrate", text.status());
      auto b = Calibrate(*l->model, l->tokenizer->Encode(*text, true), o->c, [](int d, int t) {
        std::cerr << "\rcalibrate: window " << d << "/" << t << (d == t ? "\n" : "") << std::flush;
      });
      if (!b.ok()) return Fail("calibrate", b.status());
      const std::string out = o->into_model       ? DefaultKvBasisPath(o->f.model)
                              : !o->out.empty() ? o->out
                                                : ShortName(o->f.model) + ".kv_basis.safetensors";
      Status s = WriteKvBasis(out, *b);
      if (!s.ok()) return Fail("calibrate", s);
      if (o->f.json) PrintJson({{"model", o->f.model}, {"file", o->file}, {"out", out}, {"layers", b->layers}});
      else std::cerr << "calibrate: wrote " << out << (o->into_model ? "" : " (use it as --kv lowrank:...,file=" + out + ")") << "\n";
      return 0;
    };
  });
}

}  // namespace atp::cli
