// `atp eval`: a sweep of KV policies over perplexity (the evaluation protocol, eval/perplexity.h),
// retrieval accuracy (eval/retrieval.h), KV bytes per token and decode speed, written as CSV, JSON
// and SVG plots (quality against KV bytes, one series per method). Entries run one after another
// on one loaded model; a failing entry fails the sweep (policy strings are checked before any run).
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "eval/bench.h"
#include "eval/perplexity.h"
#include "eval/retrieval.h"
#include "kv/kv_policy.h"

namespace atp {

struct SweepEntry {
  std::string method;  // plot series, e.g. "snapkv" or "snapkv+mx"
  std::string budget;  // the swept setting as text, e.g. "128" or "fp8_e4m3"
  std::string policy;  // a ParseKvPolicy string
};

// The method of a policy string: the names before ':' of each side of '+', joined by '+'.
std::string MethodOf(const std::string& policy);

// The default sweep: dense (f32, bf16), kivi at 8/4/2 bits, every mx format, streaming / h2o /
// snapkv at budgets 64/128/256, atp at ranks 8/16/32, and two compositions. lowrank entries (and
// lowrank+kivi) need a basis from `atp calibrate` on text other than the evaluation text: with an
// empty `lowrank_basis` they are left out.
std::vector<SweepEntry> DefaultSweep(const std::string& lowrank_basis);

// From flags: each policy containing "{b}" runs once per budget with "{b}" replaced (budget label:
// the value); a policy without "{b}" runs once, labelled by its parameters.
Result<std::vector<SweepEntry>> SweepFromFlags(const std::vector<std::string>& policies,
                                               const std::vector<std::string>& budgets);

struct SweepOptions {
  PerplexityOptions ppl;       // ppl.max_windows bounds the time
  RetrievalOptions retrieval;  // retrieval.max_cases bounds the time
  BenchOptions speed;          // decode speed: median single-token step after speed.context tokens
  bool run_ppl = true, run_retrieval = true, run_speed = true;
  KvPolicyParser parse_kv = [](const std::string& spec, const std::string& dir) { return ParseKvPolicy(spec, dir); };
};

// One entry's results; NaN (empty in CSV, null in JSON) where a part did not run.
struct SweepRow {
  SweepEntry entry;
  std::string kv;  // the policy's canonical description
  double ppl = NAN, nll = NAN;
  int64_t scored_tokens = 0;
  int windows = 0;
  double kv_bytes_per_token = NAN;        // perplexity run: Bytes()/Length() at the end of each window
  double kv_bytes_per_token_dense = NAN;  // dense f32 of the same model
  double kv_ratio = NAN;                  // kv_bytes_per_token / kv_bytes_per_token_dense
  double accuracy = NAN;
  int cases = 0, correct = 0;
  double retrieval_kv_bytes_per_token = NAN;
  double decode_tok_s = NAN, attention_ms_per_token = NAN;
  double seconds = 0;  // wall time of this entry
};

// progress(fraction of the sweep's work done, what runs now); may be null.
Result<std::vector<SweepRow>> RunSweep(LlamaModel& model, const Tokenizer& tok, const std::string& model_dir,
                                       const std::vector<SweepEntry>& entries, const std::vector<int32_t>& stream,
                                       const std::vector<RetrievalCase>& cases, const SweepOptions& opt,
                                       const std::function<void(double, const std::string&)>& progress);

// The CSV columns, in order; the JSON rows carry the same keys.
const std::vector<std::string>& SweepColumns();
std::string SweepCsv(const std::vector<SweepRow>& rows);
nlohmann::json SweepRowsJson(const std::vector<SweepRow>& rows);
// Rows back from SweepRowsJson's array (null numbers: NaN), to redraw a sweep's plots.
Result<std::vector<SweepRow>> SweepRowsFromJson(const nlohmann::json& results);
// {file name, SVG}: "quality_vs_bytes.svg" (perplexity and retrieval accuracy against KV bytes per
// token, with the Pareto frontier; panels without data left out) and "speed_vs_bytes.svg" (decode
// tokens/s against KV bytes per token), each only when it has data. Titles come from the meta that
// cmd_eval writes into sweep.json (model, text, windows, retrieval file, machine, host, threads).
// Within a method, the numeric parameter that varies most is drawn as a line labelled by its values;
// methods without one (formats, dtypes) as labelled points.
std::vector<std::pair<std::string, std::string>> SweepPlots(const std::vector<SweepRow>& rows, const nlohmann::json& meta);
// Writes SweepPlots into dir and removes the plot files it did not write (no stale plot of an earlier sweep).
Status WriteSweepPlots(const std::string& dir, const std::vector<SweepRow>& rows, const nlohmann::json& meta);
// Writes sweep.csv, sweep.json ({meta..., "results": rows}) and the plots into dir (created).
Status WriteSweep(const std::string& dir, const std::vector<SweepRow>& rows, const nlohmann::json& meta);

}  // namespace atp
