// The Llama-family decoder: RMSNorm, RoPE, grouped-query attention handed to a KvPolicy, SwiGLU.
// One forward call runs a batch of token chunks from any number of sequences (prefill chunks and
// decode steps mixed): linear layers see all rows at once, attention goes to each chunk's policies.
// Thread-safety: Forward() uses per-model scratch; one call at a time per model.
#pragma once
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "format/safetensors.h"
#include "kv/kv_policy.h"
#include "model/config.h"
#include "model/weights.h"
#include "sampling/choose.h"
#include "sampling/params.h"

namespace atp {

struct ForwardItem {
  std::span<KvPolicy* const> kv;     // one policy per layer, owned by the sequence
  std::span<const int32_t> tokens;   // new tokens
  int32_t start_pos = 0;             // position of tokens[0]
  bool all_logits = false;           // logits for every token (scoring) or only the last
};

struct LoadOptions {
  // Copy the weights that every decode step streams (projections, norms, the LM head) out of the
  // file mapping into anonymous memory backed by transparent huge pages. Decode is bound by how fast
  // those bytes stream: on the 2-core reference VM one thread read the mapped page-cache pages of a
  // 2.5 GB checkpoint at 1-3 GB/s (9 at best) and the same bytes on huge pages at 14-16 GB/s, which
  // made decode ~3x faster. Costs one copy at load and the weights' size in resident memory.
  // false: use the weights in place in the read-only mapping (no copy; slower decode).
  bool resident_weights = true;
  // Convert the matrices (embedding, projections, LM head) to this dtype at load, e.g. quantize a
  // bf16 checkpoint to q8_0/q4_k/... with ggml's reference quantizers (`--weights`); norms and biases
  // keep their file dtype, and so does a matrix whose rows do not fill whole blocks of the target
  // (32 or 256 elements: ref-5m's down projections, 688 columns, fit neither;
  // weights().layers[l].w_down.dtype says what happened). The converted weights live in resident
  // memory whatever resident_weights says. Unset: the file's dtypes.
  std::optional<DType> weights_dtype;
  // Store the resident block matrices (Q8_0, Q4_0, the k-quants, ...; after weights_dtype) with their rows interleaved in
  // groups of 8 (core/interleave.h), the layout the CPU's decode GEMV multiplies 8 rows at a time:
  // same bytes, same values; weights().*.interleaved says which. false: ggml's row order (the tests
  // compare the two).
  bool interleave_rows = true;
};

// A device that runs the whole forward pass in place of the CPU code (src/cuda). It reads the
// model's config and weights; Forward and ChooseTokens have LlamaModel's contracts (the queries
// arrive checked against the rows of the last Forward).
class ForwardBackend {
 public:
  virtual ~ForwardBackend() = default;
  virtual Status Forward(std::span<const ForwardItem> items, std::vector<float>* logits) = 0;
  virtual Status ChooseTokens(std::span<const TokenQuery> queries, std::vector<TokenChoice>* out) = 0;
};

class LlamaModel {
 public:
  // dir: a Hugging Face model directory (config.json + safetensors) or a .gguf file.
  static Result<std::unique_ptr<LlamaModel>> Load(const std::string& dir, const LoadOptions& opt = LoadOptions());
  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;  // owns the resident weight mapping
  LlamaModel& operator=(const LlamaModel&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const ModelWeights& weights() const { return w_; }
  const SafeTensors& tensors() const { return *st_; }
  const std::string& dir() const { return dir_; }
  KvShape kv_shape(int layer) const;
  size_t weight_bytes() const;  // bytes of all weights read by one decode step

  // Runs the batch; `logits` receives, item after item, vocab_size floats per requested row
  // (all tokens of an item with all_logits, else its last token). With logits null they stay where
  // they were computed (on a GPU: not copied back), for ChooseTokens only.
  Status Forward(std::span<const ForwardItem> items, std::vector<float>* logits);
  // The next token of rows of the last Forward's logits, by the rules of sampling/rules.h: out gets one
  // choice per query, in order. Where the logits are (host or device), so that only the chosen ids
  // and the logprobs asked for travel. InvalidArgument for a query TokenQuery::Check refuses.
  Status ChooseTokens(std::span<const TokenQuery> queries, std::vector<TokenChoice>* out);
  // From now on Forward runs on `b` (null: back to the CPU). Items must then carry KV policies
  // that `b` can drive (for CUDA: from MakeCudaKvFactory).
  void SetBackend(std::unique_ptr<ForwardBackend> b) { backend_ = std::move(b); }

 private:
  LlamaModel() = default;
  std::string dir_;
  ModelConfig cfg_;
  std::unique_ptr<SafeTensors> st_;
  ModelWeights w_;
  std::vector<float> inv_freq_;  // (head_dim/2) RoPE inverse frequencies
  std::unique_ptr<ForwardBackend> backend_;  // null: the CPU pass below
  int64_t logit_rows_ = 0;                   // rows of the last Forward's logits
  HostChooser chooser_;
  // With resident_weights: the anonymous mapping the streamed tensors of w_ point into.
  void* resident_ = nullptr;
  size_t resident_bytes_ = 0;
  Status MakeResident(std::optional<DType> matrices, bool interleave_rows);

  // Activations of the last Forward call, kept so decode steps allocate nothing; they grow to the
  // largest batch seen (N rows) and are overwritten by every call.
  struct Scratch {
    std::vector<int32_t> pos;                      // (N) position of each row
    std::vector<float> x, xb, tmp;                 // (N, d) residual stream, normed input, projection out
    std::vector<float> q, att;                     // (N, q_dim) queries, attention output
    std::vector<float> k, v;                       // (N, kv_dim)
    std::vector<float> gate, up;                   // (N, ffn)
    std::vector<float> sel;                        // (rows with logits, d) final-normed rows
    std::vector<InputBasis*> basis;                // (N) each row's Q input basis (KvPolicy::InputBases)
    std::vector<float> coef;                       // (rows of one basis, rank) xb V
    std::vector<float> logits;                     // (rows with logits, vocab) of the last call
  } scratch_;
};

}  // namespace atp
