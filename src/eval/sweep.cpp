#include "eval/sweep.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "eval/report.h"
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

// A policy string's parameters, all '+' parts merged: "kivi:bits=4,group=32" -> {bits: 4, group: 32}.
std::map<std::string, std::string> Params(const std::string& policy) {
  std::map<std::string, std::string> m;
  size_t start = 0;
  while (start <= policy.size()) {
    const size_t plus = std::min(policy.find('+', start), policy.size());
    const std::string part = policy.substr(start, plus - start);
    const size_t colon = part.find(':');
    for (size_t i = colon == std::string::npos ? part.size() : colon + 1; i < part.size();) {
      const size_t comma = std::min(part.find(',', i), part.size()), eq = part.find('=', i);
      if (eq < comma) m[part.substr(i, eq - i)] = part.substr(eq + 1, comma - eq - 1);
      i = comma + 1;
    }
    start = plus + 1;
  }
  return m;
}

bool IsNumber(const std::string& s) {
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return !s.empty() && end == s.c_str() + s.size();
}

// How the rows are drawn: per method, the numeric parameter that varies most among its entries is
// the swept one (a line through its values, points labelled with them); parameters that vary but
// are not fixed by it split the method into several lines. A method with no varying numeric
// parameter (formats, dtypes) is drawn as labelled points, never joined.
struct SeriesPlan {
  std::string name;
  bool joined;
  std::vector<size_t> rows;
  std::vector<std::string> labels;
};

std::vector<SeriesPlan> PlanSeries(const std::vector<SweepRow>& rows) {
  std::vector<std::string> methods;
  std::map<std::string, std::vector<size_t>> by_method;
  for (size_t i = 0; i < rows.size(); ++i) {
    auto& v = by_method[rows[i].entry.method];
    if (v.empty()) methods.push_back(rows[i].entry.method);
    v.push_back(i);
  }
  std::vector<SeriesPlan> out;
  for (auto& method : methods) {
    const std::vector<size_t>& idx = by_method[method];
    std::vector<std::map<std::string, std::string>> params;
    std::map<std::string, std::set<std::string>> values;
    for (size_t i : idx) params.push_back(Params(rows[i].entry.policy));
    for (auto& p : params)
      for (auto& [k, v] : p) values[k].insert(v);
    std::vector<std::string> varying;
    for (auto& [k, vs] : values) {
      size_t have = 0;
      for (auto& p : params) have += p.count(k);
      if (vs.size() > 1 || have < params.size()) varying.push_back(k);
    }
    std::string swept;
    for (auto& k : varying) {
      bool numeric = true;
      for (auto& p : params) numeric &= p.count(k) && IsNumber(p.at(k));
      if (numeric && (swept.empty() || values[k].size() > values[swept].size())) swept = k;
    }
    if (swept.empty()) {  // labelled points: the one varying value, else the budget text, else all varying parameters
      SeriesPlan s{method, false, idx, {}};
      for (size_t j = 0; j < idx.size(); ++j) {
        std::string label = rows[idx[j]].entry.budget == "default" ? "" : rows[idx[j]].entry.budget;
        if (varying.size() == 1 && params[j].count(varying[0])) {
          label = params[j].at(varying[0]);
        } else if (label.size() > 12) {
          label.clear();
          for (auto& k : varying) label += (label.empty() ? "" : ",") + k + "=" + (params[j].count(k) ? params[j].at(k) : "-");
        }
        s.labels.push_back(label);
      }
      out.push_back(s);
      continue;
    }
    // The other varying parameters that the swept value does not determine name the lines.
    std::vector<std::string> group_keys;
    for (auto& k : varying) {
      if (k == swept) continue;
      std::map<std::string, std::string> seen;
      bool determined = true;
      for (auto& p : params) {
        const std::string v = p.count(k) ? p.at(k) : "-";
        auto [it, fresh] = seen.emplace(p.at(swept), v);
        determined &= fresh || it->second == v;
      }
      if (!determined) group_keys.push_back(k);
    }
    std::map<std::string, size_t> line_of;
    for (size_t j = 0; j < idx.size(); ++j) {
      std::string group;
      for (auto& k : group_keys) group += (group.empty() ? " " : ",") + k + "=" + (params[j].count(k) ? params[j].at(k) : "-");
      auto [it, fresh] = line_of.emplace(group, out.size());
      if (fresh) out.push_back({method + group + " (" + swept + ")", true, {}, {}});
      out[it->second].rows.push_back(idx[j]);
      out[it->second].labels.push_back(params[j].at(swept));
    }
  }
  return out;
}

PlotPanel Panel(const std::vector<SweepRow>& rows, const std::string& title, const std::string& y_label,
                double SweepRow::*y, int better) {
  PlotPanel p;
  p.title = title;
  p.x_label = "KV bytes per token (log scale)";
  p.y_label = y_label;
  p.log_x = true;
  p.better = better;
  for (auto& plan : PlanSeries(rows)) {
    PlotSeries s{plan.name, {}, {}, plan.labels, plan.joined};
    for (size_t i : plan.rows) {
      s.x.push_back(BytesOf(rows[i]));
      s.y.push_back(rows[i].*y);
    }
    p.series.push_back(std::move(s));
  }
  return p;
}

bool HasData(const PlotPanel& p) {
  for (auto& s : p.series)
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) return true;
  return false;
}

// "KV compression on MODEL" and what was measured where, from a sweep's meta (keys cmd_eval writes;
// absent ones are left out).
PlotFigure Header(const std::vector<SweepRow>& rows, const nlohmann::json& meta) {
  auto str = [&](const char* k) {
    return meta.contains(k) && meta[k].is_string() ? meta[k].get<std::string>() : std::string();
  };
  auto num = [&](const char* k) {
    return meta.contains(k) && meta[k].is_number() ? std::to_string(meta[k].get<int64_t>()) : std::string();
  };
  PlotFigure f;
  f.title = "KV compression on " + ShortName(str("model"));
  int windows = 0, cases = 0;
  for (auto& r : rows) windows = std::max(windows, r.windows), cases = std::max(cases, r.cases);
  std::string line;
  if (!str("file").empty() && windows > 0) {
    const std::string how = !meta.contains("chunked") ? "" : meta["chunked"] == true ? " (chunked)" : " (decode steps)";
    line = "perplexity: " + ShortName(str("file")) + ", " + std::to_string(windows) + (windows == 1 ? " window of " : " windows of ") +
           num("context") + " context + " + num("scored_per_window") + " scored tokens" + how;
  }
  if (!str("retrieval_file").empty() && cases > 0)
    line += (line.empty() ? "" : "; ") + ("retrieval: " + ShortName(str("retrieval_file")) + ", " + std::to_string(cases) + " cases");
  if (!line.empty()) f.subtitle.push_back(line);
  line = "machine: " + (str("machine").empty() ? "unknown CPU" : str("machine"));
  if (!str("host").empty()) line += " (host " + str("host") + ")";
  if (!num("threads").empty()) line += ", " + num("threads") + " threads";
  if (!str("device").empty() && str("device") != "cpu") line += ", device " + str("device");
  const bool speed = std::any_of(rows.begin(), rows.end(), [](const SweepRow& r) { return std::isfinite(r.decode_tok_s); });
  if (speed && !num("speed_context").empty()) line += "; decode speed after " + num("speed_context") + " tokens of context";
  f.subtitle.push_back(line);
  return f;
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

std::vector<std::pair<std::string, std::string>> SweepPlots(const std::vector<SweepRow>& rows, const nlohmann::json& meta) {
  std::vector<std::pair<std::string, std::string>> out;
  PlotFigure q = Header(rows, meta);
  PlotPanel ppl = Panel(rows, "Perplexity vs KV bytes/token", "perplexity (lower is better)", &SweepRow::ppl, -1);
  ppl.clip_outliers = true;
  PlotPanel acc = Panel(rows, "Retrieval vs KV bytes/token", "exact-match accuracy (higher is better)", &SweepRow::accuracy, 1);
  acc.y_min = 0;
  acc.y_max = 1;
  for (auto* p : {&ppl, &acc})
    if (HasData(*p)) q.panels.push_back(std::move(*p));
  if (!q.panels.empty()) out.push_back({"quality_vs_bytes.svg", RenderSvg(q)});
  PlotFigure s = Header(rows, meta);
  PlotPanel speed = Panel(rows, "Decode speed vs KV bytes/token", "decode tokens/s, median step (higher is better)",
                          &SweepRow::decode_tok_s, 1);
  speed.clip_outliers = true;
  if (HasData(speed)) {
    s.panels.push_back(std::move(speed));
    out.push_back({"speed_vs_bytes.svg", RenderSvg(s)});
  }
  return out;
}

namespace {

Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  f.close();
  if (!f) return Status::IOError(path + ": write failed");
  return Status::Ok();
}

}  // namespace

Result<std::vector<SweepRow>> SweepRowsFromJson(const nlohmann::json& results) {
  if (!results.is_array()) return Status::InvalidArgument("sweep results: expected an array of rows");
  std::vector<SweepRow> rows;
  for (size_t i = 0; i < results.size(); ++i) {
    const nlohmann::json& j = results[i];
    const std::string where = "sweep results row " + std::to_string(i) + ": ";
    if (!j.is_object()) return Status::InvalidArgument(where + "not an object");
    for (const char* k : {"method", "budget", "policy", "kv"})
      if (!j.contains(k) || !j[k].is_string()) return Status::InvalidArgument(where + "'" + k + "' missing or not a string");
    SweepRow r;
    r.entry = {j["method"], j["budget"], j["policy"]};
    r.kv = j["kv"];
    auto d = [&](const char* k) {  // null or absent: did not run
      return j.contains(k) && j[k].is_number() ? j[k].get<double>() : NAN;
    };
    auto n = [&](const char* k) { return j.contains(k) && j[k].is_number_integer() ? j[k].get<int64_t>() : int64_t(0); };
    r.ppl = d("ppl"), r.nll = d("nll"), r.scored_tokens = n("scored_tokens"), r.windows = int(n("windows"));
    r.kv_bytes_per_token = d("kv_bytes_per_token"), r.kv_bytes_per_token_dense = d("kv_bytes_per_token_dense");
    r.kv_ratio = d("kv_ratio"), r.accuracy = d("accuracy"), r.cases = int(n("cases")), r.correct = int(n("correct"));
    r.retrieval_kv_bytes_per_token = d("retrieval_kv_bytes_per_token"), r.decode_tok_s = d("decode_tok_s");
    r.attention_ms_per_token = d("attention_ms_per_token"), r.seconds = std::isfinite(d("seconds")) ? d("seconds") : 0;
    rows.push_back(std::move(r));
  }
  return rows;
}

Status WriteSweepPlots(const std::string& dir, const std::vector<SweepRow>& rows, const nlohmann::json& meta) {
  std::set<std::string> stale = {"quality_vs_bytes.svg", "speed_vs_bytes.svg"};
  for (auto& [name, svg] : SweepPlots(rows, meta)) {
    ATP_RETURN_IF_ERROR(WriteText(dir + "/" + name, svg));
    stale.erase(name);
  }
  for (auto& name : stale) {  // a plot this sweep has no data for must not be left from an earlier one
    std::error_code ec;
    std::filesystem::remove(dir + "/" + name, ec);
  }
  return Status::Ok();
}

Status WriteSweep(const std::string& dir, const std::vector<SweepRow>& rows, const nlohmann::json& meta) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError(dir + ": cannot create directory: " + ec.message());
  nlohmann::json j = meta;
  j["results"] = SweepRowsJson(rows);
  ATP_RETURN_IF_ERROR(WriteText(dir + "/sweep.csv", SweepCsv(rows)));
  ATP_RETURN_IF_ERROR(WriteText(dir + "/sweep.json", j.dump(1) + "\n"));
  return WriteSweepPlots(dir, rows, meta);
}

}  // namespace atp
