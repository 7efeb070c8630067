// `atp analyze`: singular-value spectra of layer inputs and keys (the low-rank evidence), JSON + SVG.
#include <fstream>
#include <iostream>

#include "cli/common.h"
#include "core/mapped_file.h"
#include "eval/report.h"
#include "eval/spectra.h"
#include "eval/svg_plot.h"

namespace atp::cli {

void AddAnalyze(CLI::App& app, Runner* run) {
  struct Opts {
    CommonFlags f;
    std::string file, svg;
    SpectraOptions s;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("analyze", "singular-value spectra of each layer's input X and post-RoPE keys");
  AddModelFlags(cmd, &o->f, false);
  cmd->add_option("-f,--file", o->file, "text to analyse")->required();
  cmd->add_option("--window", o->s.window, "tokens per window (rows of X)")->capture_default_str();
  cmd->add_option("--max-windows", o->s.max_windows, "windows to average (0: all)")->capture_default_str();
  cmd->add_option("--svg", o->svg, "write an energy-vs-rank plot (one curve per layer) here");
  cmd->callback([o, run] {
    *run = [o]() -> int {
      auto l = Load(o->f, true);
      if (!l.ok()) return Fail("analyze", l.status());
      auto text = ReadFile(o->file);
      if (!text.ok()) return Fail("analyze", text.status());
      int windows = 0;
      auto r = AnalyzeSpectra(*l->model, l->tokenizer->Encode(*text, true), o->s, [&windows](int d, int t) {
        windows = d;
        std::cerr << "\ranalyze: window " << d << "/" << t << (d == t ? "\n" : "") << std::flush;
      });
      if (!r.ok()) return Fail("analyze", r.status());
      nlohmann::json layers = nlohmann::json::array();
      PlotPanel px{"Layer input X (" + std::to_string(o->s.window) + " tokens x d_model)", "rank r (log scale)",
                   "fraction of energy in the top r directions", {}, true};
      PlotPanel pk{"Post-RoPE keys, per KV head", px.x_label, px.y_label, {}, true};
      px.y_min = pk.y_min = 0;
      px.y_max = pk.y_max = 1;
      px.y_guides = pk.y_guides = {{0.9, "90%"}, {0.99, "99%"}};  // the energies the rank table reports
      for (size_t i = 0; i < r->size(); ++i) {
        const LayerSpectrum& s = (*r)[i];
        layers.push_back({{"layer", i}, {"input_energy", s.input_energy}, {"key_energy", s.key_energy},
                          {"input_rank_90", RankForEnergy(s.input_energy, 0.9)}, {"input_rank_99", RankForEnergy(s.input_energy, 0.99)},
                          {"key_rank_90", RankForEnergy(s.key_energy, 0.9)}, {"key_rank_99", RankForEnergy(s.key_energy, 0.99)}});
        PlotSeries sx{"layer " + std::to_string(i), {}, s.input_energy, {}, true}, sk{sx.name, {}, s.key_energy, {}, true};
        for (size_t k = 0; k < s.input_energy.size(); ++k) sx.x.push_back(double(k + 1));
        for (size_t k = 0; k < s.key_energy.size(); ++k) sk.x.push_back(double(k + 1));
        px.series.push_back(sx);
        pk.series.push_back(sk);
      }
      if (!o->svg.empty()) {
        std::ofstream f(o->svg);
        const std::string host = HostName();
        PlotFigure fig{"Low-rank structure of " + ShortName(o->f.model) + ": singular-value energy",
                       {"text " + ShortName(o->file) + ", " + std::to_string(windows) +
                            (windows == 1 ? " window of " : " windows of ") + std::to_string(o->s.window) + " tokens (mean over windows)",
                        "machine: " + CpuModelName() + (host.empty() ? "" : " (host " + host + ")")},
                       {px, pk}};
        f << RenderSvg(fig);
        if (!f) return Fail("analyze", Status::IOError(o->svg + ": write failed"));
      }
      nlohmann::json j = {{"model", o->f.model}, {"file", o->file}, {"window", o->s.window}, {"layers", layers}};
      if (o->f.json) {
        PrintJson(j);
      } else {
        for (auto& L : layers)
          std::cout << "layer " << L["layer"] << ": X rank for 90%/99% energy " << L["input_rank_90"] << "/" << L["input_rank_99"]
                    << ", keys " << L["key_rank_90"] << "/" << L["key_rank_99"] << "\n";
      }
      return 0;
    };
  });
}

}  // namespace atp::cli
