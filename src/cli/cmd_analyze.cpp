// `atp analyze`: singular-value spectra of layer inputs and keys (the low-rank evidence), JSON + SVG.
#include <fstream>
#include <iostream>

#include "cli/common.h"
#include "core/mapped_file.h"
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
      auto r = AnalyzeSpectra(*l->model, l->tokenizer->Encode(*text, true), o->s, [](int d, int t) {
        std::cerr << "\ranalyze: window " << d << "/" << t << (d == t ? "\n" : "") << std::flush;
      });
      if (!r.ok()) return Fail("analyze", r.status());
      nlohmann::json layers = nlohmann::json::array();
      PlotPanel px{"layer input X (" + std::to_string(o->s.window) + " tokens x d_model)", "rank r", "energy fraction", {}, true};
      PlotPanel pk{"post-RoPE keys per KV head", "rank r", "energy fraction", {}, true};
      for (size_t i = 0; i < r->size(); ++i) {
        const LayerSpectrum& s = (*r)[i];
        layers.push_back({{"layer", i}, {"input_energy", s.input_energy}, {"key_energy", s.key_energy},
                          {"input_rank_90", RankForEnergy(s.input_energy, 0.9)}, {"input_rank_99", RankForEnergy(s.input_energy, 0.99)},
                          {"key_rank_90", RankForEnergy(s.key_energy, 0.9)}, {"key_rank_99", RankForEnergy(s.key_energy, 0.99)}});
        PlotSeries sx{"layer " + std::to_string(i), {}, s.input_energy}, sk{"layer " + std::to_string(i), {}, s.key_energy};
        for (size_t k = 0; k < s.input_energy.size(); ++k) sx.x.push_back(double(k + 1));
        for (size_t k = 0; k < s.key_energy.size(); ++k) sk.x.push_back(double(k + 1));
        px.series.push_back(sx);
        pk.series.push_back(sk);
      }
      if (!o->svg.empty()) {
        std::ofstream f(o->svg);
        f << RenderSvg("Energy captured by the top r singular directions (" + o->f.model + ")", {px, pk});
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
