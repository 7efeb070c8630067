#include "cli/common.h"

#include <filesystem>
#include <iostream>
#include <random>

#include "core/thread_pool.h"
#include "model/gguf_tokenizer.h"
#if defined(ATP_CUDA)
#include "cuda/backend.h"
#endif

namespace atp::cli {

void AddModelFlags(CLI::App* cmd, CommonFlags* f, bool with_kv) {
  cmd->add_option("-m,--model", f->model, "model directory (Hugging Face layout) or .gguf file")->required();
  if (with_kv) cmd->add_option("--kv", f->kv, "KV cache policy, e.g. dense, dense:dtype=bf16")->capture_default_str();
  cmd->add_option("-t,--threads", f->threads, "worker threads (0: all cores)")->capture_default_str();
  cmd->add_option("-c,--ctx", f->ctx, "context limit in tokens (0: the model's max_position_embeddings)")->capture_default_str();
  cmd->add_flag("--json", f->json, "print one JSON object on stdout");
  cmd->add_option("--weights", f->weights,
                  "convert the weight matrices at load: f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|iq4_nl|q2_k|q3_k|q4_k|"
                  "q5_k|q6_k|iq4_xs (ggml's reference quantizers; a matrix whose rows are not whole blocks keeps its "
                  "type; default: as stored)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "q2_k", "q3_k",
                             "q4_k", "q5_k", "q6_k", "iq4_xs"}));
  cmd->add_flag("--no-repack", f->no_repack,
                "keep block matrices (Q8_0, Q4_0, the k-quants, ...) in the file's row order instead of groups of 8 interleaved rows (the CPU "
                "decode's layout; same values, for comparison, as llama.cpp's --no-repack)");
  // Only where --kv builds the policies: the GPU pass drives GPU policies, never a command's own.
  if (with_kv)
    cmd->add_option("--device", f->device, "where the forward pass and KV cache live: cpu, or cuda (GPU 0)")
        ->check(CLI::IsMember({"cpu", "cuda"}))
        ->capture_default_str();
}

void AddSamplingFlags(CLI::App* cmd, GenerateOptions* g) {
  cmd->add_option("-n,--max-tokens", g->max_tokens, "tokens to generate at most")->capture_default_str();
  cmd->add_option("--temp", g->sampling.temperature, "temperature (0: greedy)")->capture_default_str();
  cmd->add_option("--top-k", g->sampling.top_k, "top-k (0: off)")->capture_default_str();
  cmd->add_option("--top-p", g->sampling.top_p, "top-p nucleus (1: off)")->capture_default_str();
  cmd->add_option("--min-p", g->sampling.min_p, "min-p relative to the best token (0: off)")->capture_default_str();
  cmd->add_option("--repeat-penalty", g->sampling.repetition_penalty, "repetition penalty (1: off)")->capture_default_str();
  cmd->add_option("--seed", g->sampling.seed, "random seed (default: drawn at random and reported)");
  cmd->add_option("--stop", g->stop, "stop string (repeatable)");
}

uint64_t ResolveSeed(const CLI::App* cmd, GenerateOptions* g) {
  if (cmd->count("--seed") == 0) g->sampling.seed = (uint64_t(std::random_device()()) << 32) | std::random_device()();
  return g->sampling.seed;
}

namespace {
const char kNoCuda[] =
    "--device cuda: this atp was built without the CUDA backend (configure with a CUDA toolkit and -DATP_CUDA=ON)";
}  // namespace

KvPolicyParser KvParserFor(const std::string& device) {
  if (device != "cuda") return [](const std::string& spec, const std::string& dir) { return ParseKvPolicy(spec, dir); };
#if defined(ATP_CUDA)
  return ParseCudaKvPolicy;
#else
  return [](const std::string&, const std::string&) -> Result<std::shared_ptr<KvPolicyFactory>> {
    return Status::Unsupported(kNoCuda);
  };
#endif
}

namespace {
// The backend `device` names attached to the model (the CPU's is the model's own).
Status AttachBackend(const std::string& device, LlamaModel* model) {
  if (device != "cuda") return Status::Ok();
#if defined(ATP_CUDA)
  ATP_ASSIGN_OR_RETURN(auto backend, MakeCudaBackend(*model));
  model->SetBackend(std::move(backend));
  return Status::Ok();
#else
  return Status::Unsupported(kNoCuda);
#endif
}
}  // namespace

Result<Loaded> Load(const CommonFlags& f, bool need_tokenizer) {
  if (f.threads < 0) return Status::InvalidArgument("--threads must be >= 0");
  if (f.ctx < 0) return Status::InvalidArgument("--ctx must be >= 0");
  ThreadPool::Configure(f.threads);
  Loaded l;
  ATP_ASSIGN_OR_RETURN(l.kv, KvParserFor(f.device)(f.kv, f.model));  // before the model: a bad --kv fails at once
  LoadOptions opt;
  opt.interleave_rows = !f.no_repack;
  if (!f.weights.empty()) {
    DType t;
    if (!ParseDType(f.weights, &t)) return Status::InvalidArgument("--weights: unknown dtype '" + f.weights + "'");
    opt.weights_dtype = t;
  }
  ATP_ASSIGN_OR_RETURN(l.model, LlamaModel::Load(f.model, opt));
  ATP_RETURN_IF_ERROR(AttachBackend(f.device, l.model.get()));
  for (int layer = 0; layer < l.model->config().num_layers; ++layer)
    ATP_RETURN_IF_ERROR(l.kv->CheckShape(l.model->kv_shape(layer)));
  if (gguf::IsGgufFile(f.model)) {
    ATP_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> g, gguf::GgufFile::Open(f.model));
    if (need_tokenizer || GgufHasTokenizer(*g)) {
      ATP_ASSIGN_OR_RETURN(l.tokenizer, LoadGgufTokenizer(*g, &l.gguf_tokenizer_config));
    }
    return l;
  }
  const bool has_tok = std::filesystem::exists(f.model + "/tokenizer.json");
  if (need_tokenizer || has_tok) {
    ATP_ASSIGN_OR_RETURN(l.tokenizer, Tokenizer::LoadFromDir(f.model));
  }
  return l;
}

Result<ChatTemplate> LoadChatTemplate(const std::string& model, const Loaded& l) {
  if (!gguf::IsGgufFile(model)) return ChatTemplate::LoadFromDir(model);
  return ChatTemplate::FromTokenizerConfig(nlohmann::json::parse(l.gguf_tokenizer_config), model);
}

int Fail(const std::string& cmd, const Status& s) {
  std::cerr << "atp " << cmd << ": " << s.ToString() << "\n";
  return 1;
}

void PrintJson(const nlohmann::json& j) { std::cout << j.dump() << std::endl; }

}  // namespace atp::cli
