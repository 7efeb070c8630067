// `atp eval`: a sweep of KV policies x budgets over perplexity, retrieval accuracy, KV bytes per
// token and decode speed (eval/sweep.h), written as CSV, JSON and SVG plots into an output dir.
#include <algorithm>
#include <chrono>
#include <iostream>

#include "cli/common.h"
#include "core/mapped_file.h"
#include "core/thread_pool.h"
#include "eval/report.h"
#include "eval/sweep.h"

namespace atp::cli {

namespace {

// "[#####.....]  45%  eta 3m12s  <what>" redrawn in place on stderr.
class ProgressBar {
 public:
  void Update(double frac, const std::string& what) {
    const double now = Seconds();
    if (frac < 1 && now - last_ < 0.2) return;  // at most 5 redraws a second
    last_ = now;
    drawn_ = true;
    const int width = 30, filled = int(std::clamp(frac, 0.0, 1.0) * width);
    std::string eta = "--";
    if (frac > 0.01) {
      const int s = int((now - start_) * (1 - frac) / frac);
      eta = std::to_string(s / 60) + "m" + (s % 60 < 10 ? "0" : "") + std::to_string(s % 60) + "s";
    }
    std::string w = what.size() > 60 ? what.substr(0, 57) + "..." : what;
    std::cerr << "\r[" << std::string(size_t(filled), '#') << std::string(size_t(width - filled), '.') << "] " << int(frac * 100)
              << "%  eta " << eta << "  " << w << "\033[K" << std::flush;
  }
  void Done() {
    if (drawn_) std::cerr << "\n";
  }

 private:
  static double Seconds() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
  double start_ = Seconds(), last_ = -1;
  bool drawn_ = false;
};

}  // namespace

void AddEval(CLI::App& app, Runner* run) {
  struct Opts {
    CommonFlags f;
    std::string file, retrieval, out = "eval-out", basis, replot;
    std::vector<std::string> policies, budgets;
    SweepOptions s;
    bool no_ppl = false, no_retrieval = false, no_speed = false;
  };
  auto o = std::make_shared<Opts>();
  // Defaults sized so the full default sweep on ref-5m stays well under 15 minutes on 2 cores.
  o->s.ppl.max_windows = 16;
  o->s.retrieval.max_cases = 32;
  o->s.speed.prompt_tokens = 1;
  o->s.speed.context = 384;
  o->s.speed.decode_tokens = 16;
  o->s.speed.repeats = 5;
  auto* cmd = app.add_subcommand("eval", "sweep KV policies x budgets: perplexity, retrieval accuracy, KV bytes, decode speed");
  AddModelFlags(cmd, &o->f, false);
  cmd->get_option("--model")->required(false);  // not with --replot (checked when run)
  cmd->add_option("--replot", o->replot, "redraw the SVG plots of an earlier sweep from DIR/sweep.json (runs nothing)");
  cmd->add_option("-f,--file", o->file, "evaluation text for perplexity (protocol: docs/evaluation.md)");
  cmd->add_option("--retrieval", o->retrieval, "retrieval cases, JSON lines {prompt, answer, kind, prompt_tokens}");
  cmd->add_option("-o,--out", o->out, "output directory for sweep.csv, sweep.json and the SVG plots")->capture_default_str();
  cmd->add_option("--kv", o->policies, "policy to sweep (repeatable); '{b}' is replaced by each of --budgets; default: the built-in sweep");
  cmd->add_option("--budgets", o->budgets, "values for '{b}' in --kv policies, e.g. 64,128,256")->delimiter(',');
  cmd->add_option("--lowrank-basis", o->basis, "basis from `atp calibrate` (on text other than -f): adds lowrank entries to the default sweep");
  cmd->add_option("--window-context", o->s.ppl.context, "prefilled context tokens C per perplexity window")->capture_default_str();
  cmd->add_option("--scored", o->s.ppl.scored, "scored tokens S per window")->capture_default_str();
  cmd->add_option("--max-windows", o->s.ppl.max_windows, "perplexity windows per policy (0: all)")->capture_default_str();
  cmd->add_flag("--chunked", o->s.ppl.chunked,
                "score each window's S tokens as one causal chunk (faster; not for eviction policies, which evict between steps)");
  cmd->add_option("--max-cases", o->s.retrieval.max_cases, "retrieval cases per policy (0: all)")->capture_default_str();
  cmd->add_option("--extra-tokens", o->s.retrieval.extra_tokens, "tokens generated beyond the answer's length")->capture_default_str();
  cmd->add_option("--decode-context", o->s.speed.context, "decode speed: tokens in the cache before the timed decode steps")
      ->capture_default_str();
  cmd->add_option("--decode-tokens", o->s.speed.decode_tokens, "decode speed: timed decode steps per repeat")->capture_default_str();
  cmd->add_option("--decode-repeats", o->s.speed.repeats, "decode speed: repeats (the median step is reported)")->capture_default_str();
  cmd->add_flag("--no-perplexity", o->no_ppl, "skip perplexity");
  cmd->add_flag("--no-retrieval", o->no_retrieval, "skip retrieval");
  cmd->add_flag("--no-speed", o->no_speed, "skip decode speed");
  cmd->add_option("--device", o->f.device, "where the forward pass and KV caches live: cpu, or cuda (GPU 0)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->callback([o, run] {
    *run = [o]() -> int {
      if (!o->replot.empty()) {
        const std::string path = o->replot + "/sweep.json";
        auto text = ReadFile(path);
        if (!text.ok()) return Fail("eval", text.status());
        const nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
        if (j.is_discarded() || !j.is_object() || !j.contains("results"))
          return Fail("eval", Status::InvalidArgument(path + ": not a sweep.json (an object with \"results\")"));
        auto rows = SweepRowsFromJson(j["results"]);
        if (!rows.ok()) return Fail("eval", rows.status().WithContext(path + ": "));
        nlohmann::json meta = j;
        meta.erase("results");
        Status w = WriteSweepPlots(o->replot, *rows, meta);
        if (!w.ok()) return Fail("eval", w);
        std::cerr << "atp eval: redrew the plots in " << o->replot << "\n";
        return 0;
      }
      if (o->f.model.empty()) return Fail("eval", Status::InvalidArgument("-m/--model is required (unless --replot)"));
      SweepOptions s = o->s;
      s.run_ppl = !o->no_ppl;
      s.run_retrieval = !o->no_retrieval && !o->retrieval.empty();
      s.run_speed = !o->no_speed;
      if (s.run_ppl && o->file.empty())
        return Fail("eval", Status::InvalidArgument("-f/--file is required for perplexity (or pass --no-perplexity)"));
      if (!o->no_retrieval && o->retrieval.empty()) std::cerr << "atp eval: no --retrieval file; retrieval skipped\n";
      s.parse_kv = KvParserFor(o->f.device);
      std::vector<SweepEntry> entries;
      if (o->policies.empty()) {
        entries = DefaultSweep(o->basis);
        if (o->basis.empty()) std::cerr << "atp eval: no --lowrank-basis; lowrank entries left out of the default sweep\n";
        if (o->f.device == "cuda") {  // the GPU has kernels for part of the default sweep: run that part
          std::vector<SweepEntry> kept;
          std::string left;
          for (auto& e : entries) {
            if (s.parse_kv(e.policy, o->f.model).ok())
              kept.push_back(e);
            else
              left += (left.empty() ? "" : ", ") + e.policy;
          }
          if (!left.empty()) std::cerr << "atp eval: --device cuda has no kernels for " << left << "; left out\n";
          entries = std::move(kept);
        }
      } else {
        auto e = SweepFromFlags(o->policies, o->budgets);
        if (!e.ok()) return Fail("eval", e.status());
        entries = *e;
      }
      auto l = Load(o->f, true);
      if (!l.ok()) return Fail("eval", l.status());
      std::vector<int32_t> stream;
      if (s.run_ppl) {
        auto text = ReadFile(o->file);
        if (!text.ok()) return Fail("eval", text.status());
        stream = l->tokenizer->Encode(*text, true);  // BOS + the whole file (the protocol's stream)
      }
      std::vector<RetrievalCase> cases;
      if (s.run_retrieval) {
        auto c = LoadRetrievalCases(o->retrieval);
        if (!c.ok()) return Fail("eval", c.status());
        cases = *c;
      }
      ProgressBar bar;
      auto rows = RunSweep(*l->model, *l->tokenizer, o->f.model, entries, stream, cases, s,
                           [&](double frac, const std::string& what) { bar.Update(frac, what); });
      bar.Done();
      if (!rows.ok()) return Fail("eval", rows.status());
      const ModelConfig& c = l->model->config();
      nlohmann::json meta = {{"model", o->f.model},
                             {"file", s.run_ppl ? nlohmann::json(o->file) : nlohmann::json(nullptr)},
                             {"retrieval_file", s.run_retrieval ? nlohmann::json(o->retrieval) : nlohmann::json(nullptr)},
                             {"machine", CpuModelName()},
                             {"host", HostName()},
                             {"device", o->f.device},
                             {"threads", ThreadPool::Global().size()},
                             {"context", s.ppl.context},
                             {"scored_per_window", s.ppl.scored},
                             {"chunked", s.ppl.chunked},
                             {"max_windows", s.ppl.max_windows},
                             {"max_cases", s.retrieval.max_cases},
                             {"speed_context", s.speed.context},
                             {"kv_bytes_per_token_dense", 2.0 * c.kv_dim() * sizeof(float) * c.num_layers}};
      Status w = WriteSweep(o->out, *rows, meta);
      if (!w.ok()) return Fail("eval", w);
      if (o->f.json) {
        meta["results"] = SweepRowsJson(*rows);
        PrintJson(meta);
      } else {
        std::cout << SweepCsv(*rows);
        std::cerr << "atp eval: wrote " << o->out << "/sweep.csv, sweep.json, quality_vs_bytes.svg, speed_vs_bytes.svg\n";
      }
      return 0;
    };
  });
}

}  // namespace atp::cli
