#include "eval/sweep.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "eval/svg_plot.h"

namespace atp {

namespace {

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::string Num(double v) {
  if (!std::isfinite(v)) return "";
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

std::string Quote(const std::string& s) {
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

nlohmann::json J(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

// The x of a row in the plots: KV bytes per token of the perplexity run, else of the retrieval run.
double BytesOf(const SweepRow& r) {
  return std::isfinite(r.kv_bytes_per_token) ? r.kv_bytes_per_token : r.retrieval_kv_bytes_per_token;
}

PlotPanel Panel(const std::vector<SweepRow>& rows, const std::string& title, const std::string& y_label,
                double SweepRow::*y) {
  PlotPanel p;
  p.title = title;
  p.x_label = "KV bytes per token (log scale)";
  p.y_label = y_label;
  p.log_x = true;
  std::map<std::string, size_t> index;
  for (auto& r : rows) {
    const double x = BytesOf(r), v = r.*y;
    if (!std::isfinite(x) || !std::isfinite(v)) continue;
    auto [it, fresh] = index.emplace(r.entry.method, p.series.size());
    if (fresh) p.series.push_back({r.entry.method, {}, {}});
    p.series[it->second].x.push_back(x);
    p.series[it->second].y.push_back(v);
  }
  for (auto& s : p.series) {  // points in x order, so each method draws one line
    std::vector<size_t> o(s.x.size());
    for (size_t i = 0; i < o.size(); ++i) o[i] = i;
    std::sort(o.begin(), o.end(), [&](size_t a, size_t b) { return s.x[a] < s.x[b]; });
    PlotSeries t{s.name, {}, {}};
    for (size_t i : o) t.x.push_back(s.x[i]), t.y.push_back(s.y[i]);
    s = t;
  }
  return p;
}

}  // namespace

std::string MethodOf(const std::string& policy) {
  std::string m;
  size_t start = 0;
  while (true) {
    const size_t plus = policy.find('+', start);
    const std::string part = policy.substr(start, plus == std::string::npos ? std::string::npos : plus - start);
    m += (m.empty() ? "" : "+") + part.substr(0, part.find(':'));
    if (plus == std::string::npos) return m;
    start = plus + 1;
  }
}

std::vector<SweepEntry> DefaultSweep(const std::string& lowrank_basis) {
  std::vector<SweepEntry> e = {{"dense", "f32", "dense"}, {"dense", "bf16", "dense:dtype=bf16"}};
  for (int b : {8, 4, 2}) e.push_back({"kivi", std::to_string(b), "kivi:bits=" + std::to_string(b) + ",group=32,residual=64"});
  for (const char* f : {"fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp6_e3m2", "fp4", "int8", "nvfp4"})
    e.push_back({"mx", f, std::string("mx:fmt=") + f});
  for (const char* m : {"streaming", "h2o", "snapkv"})
    for (int b : {64, 128, 256}) e.push_back({m, std::to_string(b), std::string(m) + ":budget=" + std::to_string(b)});
  for (int r : {8, 16, 32}) e.push_back({"atp", std::to_string(r), "atp:block=64,rank=" + std::to_string(r) + ",window=64"});
  e.push_back({"snapkv+mx", "128", "snapkv:budget=128+mx:fmt=fp8_e4m3"});
  e.push_back({"streaming+kivi", "128", "streaming:budget=128+kivi:bits=4,group=32,residual=32"});
  if (!lowrank_basis.empty()) {
    for (int rk : {16, 32})
      e.push_back({"lowrank", std::to_string(rk), "lowrank:rk=" + std::to_string(rk) + ",rv=32,file=" + lowrank_basis});
    e.push_back({"lowrank+kivi", "16", "lowrank:rk=16,rv=32,file=" + lowrank_basis + "+kivi:bits=4,group=16,residual=64"});
  }
  return e;
}

Result<std::vector<SweepEntry>> SweepFromFlags(const std::vector<std::string>& policies, const std::vector<std::string>& budgets) {
  std::vector<SweepEntry> e;
  for (auto& p : policies) {
    const size_t at = p.find("{b}");
    if (at == std::string::npos) {
      const size_t colon = p.find(':');
      e.push_back({MethodOf(p), colon == std::string::npos ? "default" : p.substr(colon + 1), p});
      continue;
    }
    if (budgets.empty()) return Status::InvalidArgument("--kv " + p + " has {b} but no --budgets were given");
    for (auto& b : budgets) {
      std::string s = p;
      for (size_t i = s.find("{b}"); i != std::string::npos; i = s.find("{b}", i + b.size())) s.replace(i, 3, b);
      e.push_back({MethodOf(s), b, s});
    }
  }
  if (e.empty()) return Status::InvalidArgument("no policies to evaluate");
  return e;
}

Result<std::vector<SweepRow>> RunSweep(LlamaModel& model, const Tokenizer& tok, const std::string& model_dir,
                                       const std::vector<SweepEntry>& entries, const std::vector<int32_t>& stream,
                                       const std::vector<RetrievalCase>& cases, const SweepOptions& opt,
                                       const std::function<void(double, const std::string&)>& progress) {
  // Every policy string is checked before anything runs.
  std::vector<std::shared_ptr<KvPolicyFactory>> factories;
  for (auto& e : entries) {
    auto f = opt.parse_kv(e.policy, model_dir);
    if (!f.ok()) return f.status();
    for (int l = 0; l < model.config().num_layers; ++l) ATP_RETURN_IF_ERROR(f.value()->CheckShape(model.kv_shape(l)));
    factories.push_back(f.value());
  }
  // Work in tokens through the model, for the progress fraction.
  const int W = opt.ppl.context + opt.ppl.scored;
  int windows = W > 0 ? int(stream.size() / size_t(W)) : 0;
  if (opt.ppl.max_windows > 0) windows = std::min(windows, opt.ppl.max_windows);
  const int ncases = opt.retrieval.max_cases > 0 ? std::min<int>(opt.retrieval.max_cases, int(cases.size())) : int(cases.size());
  std::vector<double> case_units(size_t(ncases) + 1, 0);
  for (int i = 0; i < ncases; ++i)
    case_units[size_t(i) + 1] = case_units[size_t(i)] + std::max<double>(1, cases[size_t(i)].prompt_tokens);
  const double ppl_units = opt.run_ppl ? double(windows) * W : 0;
  const double ret_units = opt.run_retrieval ? case_units.back() : 0;
  const double speed_units = opt.run_speed ? double(opt.speed.repeats) * (opt.speed.context + opt.speed.decode_tokens) : 0;
  const double per_entry = std::max(1.0, ppl_units + ret_units + speed_units), total = per_entry * double(entries.size());

  const ModelConfig& c = model.config();
  const double dense_bytes = 2.0 * c.kv_dim() * sizeof(float) * c.num_layers;
  std::vector<SweepRow> rows;
  for (size_t i = 0; i < entries.size(); ++i) {
    const KvPolicyFactory& f = *factories[i];
    SweepRow r;
    r.entry = entries[i];
    r.kv = f.Describe();
    r.kv_bytes_per_token_dense = dense_bytes;
    const double base = per_entry * double(i), t0 = Now();
    const std::string name = entries[i].policy;
    auto report = [&](double done, const std::string& what) {
      if (progress) progress((base + done) / total, name + ": " + what);
    };
    if (opt.run_ppl) {
      ATP_ASSIGN_OR_RETURN(PerplexityResult p, Perplexity(model, f, stream, opt.ppl, [&](int d, int n) {
                             report(double(d) * W, "perplexity window " + std::to_string(d) + "/" + std::to_string(n));
                           }));
      r.ppl = p.ppl;
      r.nll = p.nll;
      r.scored_tokens = p.scored_tokens;
      r.windows = p.windows;
      r.kv_bytes_per_token = p.kv_bytes_per_token;
    }
    if (opt.run_retrieval && ncases > 0) {
      ATP_ASSIGN_OR_RETURN(RetrievalResult q, Retrieval(model, tok, f, cases, opt.retrieval, [&](int d, int n) {
                             report(ppl_units + case_units[size_t(d)], "retrieval case " + std::to_string(d) + "/" + std::to_string(n));
                           }));
      r.accuracy = q.accuracy;
      r.cases = q.cases;
      r.correct = q.correct;
      r.retrieval_kv_bytes_per_token = q.kv_bytes_per_token;
    }
    if (opt.run_speed) {
      report(ppl_units + ret_units, "decode speed");
      ATP_ASSIGN_OR_RETURN(BenchResult b, BenchModel(model, f, opt.speed, nullptr));
      r.decode_tok_s = b.decode_tok_s;
      r.attention_ms_per_token = b.attention_ms_per_token;
    }
    r.kv_ratio = BytesOf(r) / dense_bytes;
    r.seconds = Now() - t0;
    report(per_entry, "done");
    rows.push_back(std::move(r));
  }
  return rows;
}

const std::vector<std::string>& SweepColumns() {
  static const std::vector<std::string> k = {
      "method", "budget", "policy", "kv", "ppl", "nll", "scored_tokens", "windows", "kv_bytes_per_token",
      "kv_bytes_per_token_dense", "kv_ratio", "accuracy", "cases", "correct", "retrieval_kv_bytes_per_token",
      "decode_tok_s", "attention_ms_per_token", "seconds"};
  return k;
}

std::string SweepCsv(const std::vector<SweepRow>& rows) {
  std::string s;
  for (auto& c : SweepColumns()) s += (s.empty() ? "" : ",") + c;
  s += "\n";
  for (auto& r : rows) {
    const std::vector<std::string> cells = {
        Quote(r.entry.method), Quote(r.entry.budget), Quote(r.entry.policy), Quote(r.kv), Num(r.ppl), Num(r.nll),
        std::to_string(r.scored_tokens), std::to_string(r.windows), Num(r.kv_bytes_per_token),
        Num(r.kv_bytes_per_token_dense), Num(r.kv_ratio), Num(r.accuracy), std::to_string(r.cases),
        std::to_string(r.correct), Num(r.retrieval_kv_bytes_per_token), Num(r.decode_tok_s),
        Num(r.attention_ms_per_token), Num(r.seconds)};
    for (size_t i = 0; i < cells.size(); ++i) s += (i ? "," : "") + cells[i];
    s += "\n";
  }
  return s;
}

nlohmann::json SweepRowsJson(const std::vector<SweepRow>& rows) {
  nlohmann::json a = nlohmann::json::array();
  for (auto& r : rows)
    a.push_back({{"method", r.entry.method}, {"budget", r.entry.budget}, {"policy", r.entry.policy}, {"kv", r.kv},
                 {"ppl", J(r.ppl)}, {"nll", J(r.nll)}, {"scored_tokens", r.scored_tokens}, {"windows", r.windows},
                 {"kv_bytes_per_token", J(r.kv_bytes_per_token)}, {"kv_bytes_per_token_dense", J(r.kv_bytes_per_token_dense)},
                 {"kv_ratio", J(r.kv_ratio)}, {"accuracy", J(r.accuracy)}, {"cases", r.cases}, {"correct", r.correct},
                 {"retrieval_kv_bytes_per_token", J(r.retrieval_kv_bytes_per_token)}, {"decode_tok_s", J(r.decode_tok_s)},
                 {"attention_ms_per_token", J(r.attention_ms_per_token)}, {"seconds", J(r.seconds)}});
  return a;
}

std::vector<std::pair<std::string, std::string>> SweepPlots(const std::vector<SweepRow>& rows, const std::string& title) {
  return {{"quality_vs_bytes.svg",
           RenderSvg(title, {Panel(rows, "Perplexity vs KV bytes/token", "perplexity (lower is better)", &SweepRow::ppl),
                             Panel(rows, "Retrieval accuracy vs KV bytes/token", "exact-match accuracy", &SweepRow::accuracy)})},
          {"speed_vs_bytes.svg",
           RenderSvg(title, {Panel(rows, "Decode speed vs KV bytes/token", "decode tokens/s (median step)", &SweepRow::decode_tok_s)})}};
}

Status WriteSweep(const std::string& dir, const std::vector<SweepRow>& rows, const nlohmann::json& meta,
                  const std::string& title) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError(dir + ": cannot create directory: " + ec.message());
  auto write = [&](const std::string& name, const std::string& text) -> Status {
    const std::string path = dir + "/" + name;
    std::ofstream f(path, std::ios::binary);
    f << text;
    f.close();
    if (!f) return Status::IOError(path + ": write failed");
    return Status::Ok();
  };
  nlohmann::json j = meta;
  j["results"] = SweepRowsJson(rows);
  ATP_RETURN_IF_ERROR(write("sweep.csv", SweepCsv(rows)));
  ATP_RETURN_IF_ERROR(write("sweep.json", j.dump(1) + "\n"));
  for (auto& [name, svg] : SweepPlots(rows, title)) ATP_RETURN_IF_ERROR(write(name, svg));
  return Status::Ok();
}

}  // namespace atp
