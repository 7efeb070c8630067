// Shared pieces of the `atp` subcommands: loading a model directory, common flags, error exits.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "core/status.h"
#include "engine/generate.h"
#include "kv/kv_policy.h"
#include "model/llama.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace atp::cli {

// Flags every measuring command shares, spelled as docs/design.md section 1 lists them.
struct CommonFlags {
  std::string model;
  std::string kv = "dense";
  int threads = 0;
  int ctx = 0;
  bool json = false;
  std::string weights;          // "": the file's dtypes; else the matrices converted at load (LoadOptions)
  bool no_repack = false;       // keep block rows in ggml's order (LoadOptions::interleave_rows)
  std::string device = "cpu";  // "cuda": the forward pass and KV policies on the GPU (src/cuda)
};
void AddModelFlags(CLI::App* cmd, CommonFlags* f, bool with_kv = true);

// -n, --temp, --top-k, --top-p, --min-p, --repeat-penalty, --seed, --stop: the sampling flags of
// every command that generates, bound to *g.
void AddSamplingFlags(CLI::App* cmd, GenerateOptions* g);
// After parsing: without --seed on `cmd`, g's seed is drawn from std::random_device, so that runs differ.
// Returns the seed, for the command to report.
uint64_t ResolveSeed(const CLI::App* cmd, GenerateOptions* g);

struct Loaded {
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the directory has none and it was optional
  std::shared_ptr<KvPolicyFactory> kv;
  // A .gguf's tokenizer_config.json text, derived with its tokenizer (empty for a directory).
  std::string gguf_tokenizer_config;
};
// How `--device` turns policy strings into policies: the CPU registry (ParseKvPolicy) or the GPU's
// (ParseCudaKvPolicy). The one place, with Load's backend, that knows which backends this build has:
// a build without CUDA answers "cuda" with a parser that fails saying so.
KvPolicyParser KvParserFor(const std::string& device);

// Configures threads, loads model, tokenizer (required or not) and the KV policy; with --device cuda
// the model runs on the GPU backend.
Result<Loaded> Load(const CommonFlags& f, bool need_tokenizer);

// The chat template of a model directory or .gguf file (ChatTemplate::LoadFromDir's rules); l is what
// Load returned for it with a tokenizer.
Result<ChatTemplate> LoadChatTemplate(const std::string& model, const Loaded& l);

// Prints "atp <cmd>: <message>" on stderr and returns the exit code 1.
int Fail(const std::string& cmd, const Status& s);
// Prints one JSON object on stdout (the only stdout output of --json runs).
void PrintJson(const nlohmann::json& j);

// Each subcommand registers its options and sets *run to the function that executes it.
using Runner = std::function<int()>;
void AddGenerate(CLI::App& app, Runner* run);
void AddPerplexity(CLI::App& app, Runner* run);
void AddInspect(CLI::App& app, Runner* run);
void AddBench(CLI::App& app, Runner* run);
void AddTestgen(CLI::App& app, Runner* run);
void AddServe(CLI::App& app, Runner* run);
void AddCalibrate(CLI::App& app, Runner* run);
void AddAnalyze(CLI::App& app, Runner* run);
void AddEval(CLI::App& app, Runner* run);
void AddChat(CLI::App& app, Runner* run);
void AddConvert(CLI::App& app, Runner* run);
void AddPlot(CLI::App& app, Runner* run);

}  // namespace atp::cli
