// `atp calibrate`: per-layer, per-KV-head key and value bases for the `lowrank` policy.
#include <iostream>

#include "cli/common.h"
#include "core/mapped_file.h"
#include "eval/calibrate.h"

namespace atp::cli {

void AddCalibrate(CLI::App& app, Runner* run) {
  struct Opts {
    CommonFlags f;
    std::string file, out;
    CalibrateOptions c;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("calibrate", "compute lowrank KV bases from a calibration text (use text other than your evaluation text)");
  AddModelFlags(cmd, &o->f, false);
  cmd->add_option("-f,--file", o->file, "calibration text")->required();
  cmd->add_option("-o,--out", o->out, "output file (default: MODEL/kv_basis.safetensors, or MODEL.kv_basis.safetensors for a .gguf)");
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
      std::string out = o->out.empty() ? DefaultKvBasisPath(o->f.model) : o->out;
      Status s = WriteKvBasis(out, *b);
      if (!s.ok()) return Fail("calibrate", s);
      if (o->f.json) PrintJson({{"model", o->f.model}, {"file", o->file}, {"out", out}, {"layers", b->layers}});
      else std::cerr << "calibrate: wrote " << out << "\n";
      return 0;
    };
  });
}

}  // namespace atp::cli
