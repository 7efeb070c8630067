#include "eval/serving_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "eval/report.h"
#include "eval/svg_plot.h"

namespace atp {

namespace {

constexpr double kMaxConcurrency = 1 << 20;  // clients; bounds the log2 axis's ticks

struct Level {
  double concurrency, tok_s, ttft_p50, ttft_p99, itl_p50, itl_p99;
  int64_t requests;
};
struct Policy {
  std::string kv;
  std::vector<Level> levels;
};

// The report's policies, checked: every field a figure draws is a number, or null/absent (NaN).
Result<std::vector<Policy>> Policies(const nlohmann::json& report) {
  if (!report.is_object() || !report.contains("policies") || !report["policies"].is_array() || report["policies"].empty())
    return Status::InvalidArgument("serving results: expected an object with a non-empty \"policies\" array");
  std::vector<Policy> out;
  for (size_t i = 0; i < report["policies"].size(); ++i) {
    const nlohmann::json& p = report["policies"][i];
    const std::string where = "serving results: policies[" + std::to_string(i) + "]";
    if (!p.is_object() || !p.contains("kv") || !p["kv"].is_string())
      return Status::InvalidArgument(where + ": 'kv' missing or not a string");
    if (!p.contains("levels") || !p["levels"].is_array() || p["levels"].empty())
      return Status::InvalidArgument(where + ": 'levels' missing or not a non-empty array");
    Policy pol{p["kv"], {}};
    for (size_t k = 0; k < p["levels"].size(); ++k) {
      const nlohmann::json& l = p["levels"][k];
      const std::string at = where + ".levels[" + std::to_string(k) + "]";
      if (!l.is_object()) return Status::InvalidArgument(at + ": not an object");
      if (!l.contains("concurrency") || !l["concurrency"].is_number() || !(l["concurrency"].get<double>() >= 1) ||
          !(l["concurrency"].get<double>() <= kMaxConcurrency))
        return Status::InvalidArgument(at + ": 'concurrency' missing or not a number from 1 to 2^20");
      double v[5];
      const char* keys[5] = {"tok_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms"};
      for (int f = 0; f < 5; ++f) {
        if (!l.contains(keys[f]) || l[keys[f]].is_null())
          v[f] = NAN;
        else if (l[keys[f]].is_number())
          v[f] = l[keys[f]].get<double>();
        else
          return Status::InvalidArgument(at + ": '" + keys[f] + "' is not a number");
      }
      const int64_t requests = l.contains("requests") && l["requests"].is_number_integer() ? l["requests"].get<int64_t>() : 0;
      pol.levels.push_back({l["concurrency"].get<double>(), v[0], v[1], v[2], v[3], v[4], requests});
    }
    out.push_back(std::move(pol));
  }
  return out;
}

std::string Str(const nlohmann::json& j, const char* k) {
  return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
}
// A count as the report gives it ("229"); any JSON number is accepted, so it is printed through a
// double (a cast of 1e30 to an integer would be undefined).
std::string Int(const nlohmann::json& j, const char* k) {
  if (!j.contains(k) || !j[k].is_number()) return "";
  char b[32];
  std::snprintf(b, sizeof b, "%.15g", j[k].get<double>());
  return b;
}
std::string Fixed1(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

// What every figure's title block says: the model, what the clients sent, where it ran.
PlotFigure Header(const std::string& what, const nlohmann::json& r, const std::vector<Policy>& policies) {
  PlotFigure f;
  f.title = what + ": atp serve on " + ShortName(Str(r, "model"));
  std::string line = "clients: streaming /v1/completions, greedy";
  const std::string words = Int(r, "prompt_words"), tokens = Int(r, "prompt_tokens"), gen = Int(r, "max_tokens");
  if (!tokens.empty() || !words.empty())
    line += "; context per request: " + (tokens.empty() ? words + "-word prompt" : tokens + "-token prompt" +
                                                                                         (words.empty() ? "" : " (" + words + " words)"));
  if (!gen.empty()) line += " + " + gen + " generated tokens";
  int64_t lo = INT64_MAX, hi = 0;
  for (auto& p : policies)
    for (auto& l : p.levels)
      if (l.requests > 0) lo = std::min(lo, l.requests), hi = std::max(hi, l.requests);
  if (hi > 0) line += "; " + std::to_string(lo) + (hi > lo ? "-" + std::to_string(hi) : "") + " requests per level";
  const std::string repeat = Int(r, "repeat");
  if (!repeat.empty() && repeat != "1") line += ", median of " + repeat + " runs";
  f.subtitle.push_back(line);
  line = "machine: " + (Str(r, "machine").empty() ? "unknown CPU" : Str(r, "machine"));
  if (!Str(r, "host").empty()) line += " (host " + Str(r, "host") + ")";
  if (!Int(r, "cpus").empty()) line += ", " + Int(r, "cpus") + " CPUs";
  if (r.contains("load_average") && r["load_average"].is_object()) {
    const nlohmann::json& la = r["load_average"];
    auto first = [&](const char* k) { return la.contains(k) && la[k].is_array() && !la[k].empty() && la[k][0].is_number(); };
    if (first("before") && first("after"))
      line += ", load average " + Fixed1(la["before"][0].get<double>()) + " before / " + Fixed1(la["after"][0].get<double>()) + " after";
  }
  if (!Str(r, "commit").empty()) line += "; commit " + Str(r, "commit");
  if (!Str(r, "date").empty()) line += ", " + Str(r, "date");
  f.subtitle.push_back(line);
  return f;
}

// One series per policy of `y` against concurrency, on a log2 axis with a tick at every power of 2
// up to the largest level.
PlotPanel Panel(const std::vector<Policy>& policies, const std::string& title, const std::string& y_label,
                double Level::*y) {
  PlotPanel p{title, "concurrent clients (log2 scale)", y_label, {}, true};
  p.y_min = 0;  // latencies and rates read against zero
  double max_c = 1;
  for (auto& pol : policies) {
    PlotSeries s{pol.kv, {}, {}, {}, true};
    for (auto& l : pol.levels) {
      s.x.push_back(l.concurrency);
      s.y.push_back(l.*y);
      max_c = std::max(max_c, l.concurrency);
    }
    p.series.push_back(std::move(s));
  }
  for (double c = 1; c <= max_c; c *= 2) p.x_ticks.push_back(c);  // at most 21: max_c <= 2^20
  return p;
}

}  // namespace

Result<std::vector<std::pair<std::string, std::string>>> ServingPlots(const nlohmann::json& report) {
  ATP_ASSIGN_OR_RETURN(std::vector<Policy> policies, Policies(report));
  std::vector<std::pair<std::string, std::string>> out;
  PlotFigure t = Header("Throughput", report, policies);
  t.panels.push_back(Panel(policies, "Generated tokens/s vs concurrency", "tokens per second, all clients (higher is better)",
                           &Level::tok_s));
  out.push_back({"throughput_vs_concurrency.svg", RenderSvg(t)});
  PlotFigure ttft = Header("Time to first token", report, policies);
  ttft.panels.push_back(Panel(policies, "TTFT, median (p50)", "milliseconds (lower is better)", &Level::ttft_p50));
  ttft.panels.push_back(Panel(policies, "TTFT, 99th percentile", "milliseconds (lower is better)", &Level::ttft_p99));
  out.push_back({"ttft_vs_concurrency.svg", RenderSvg(ttft)});
  PlotFigure itl = Header("Inter-token latency", report, policies);
  itl.panels.push_back(Panel(policies, "ITL, median (p50)", "milliseconds per token (lower is better)", &Level::itl_p50));
  itl.panels.push_back(Panel(policies, "ITL, 99th percentile", "milliseconds per token (lower is better)", &Level::itl_p99));
  out.push_back({"itl_vs_concurrency.svg", RenderSvg(itl)});
  return out;
}

}  // namespace atp
