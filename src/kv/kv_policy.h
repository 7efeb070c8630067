// The KvPolicy interface: what one sequence keeps of one layer's keys and values, and how its
// queries attend to it. The forward pass calls InputBases, Append then Attend; a policy never reaches
// into the model. Thread-safety: a policy belongs to one sequence; calls on it are serialized.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "kv/page_store.h"

namespace atp {

// Geometry of one layer's attention, fixed for the model.
struct KvShape {
  int layer = 0;
  int d_model = 0;      // width of the layer input X
  int n_heads = 0;      // query heads
  int n_kv_heads = 0;   // key/value heads (grouped-query attention)
  int head_dim = 0;
  // The model's RoPE inverse frequencies (head_dim/2; rope_scaling and GGUF rope_freqs applied), the
  // angles at which the keys Append receives were rotated: for policies that keep keys before RoPE
  // (atp rope=pre). Empty when the caller has none (tests, shape probes).
  std::vector<float> rope_inv_freq = {};
  // Where the policy's rows live: the engine's store, or null for the process's (PageStore::Process()).
  PageStore* pages = nullptr;
  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  PageStore& store() const { return pages ? *pages : PageStore::Process(); }
};

// A basis for computing a token's Q projection in low rank (docs/design.md section 4, atp proj=lowrank):
// x W_q ~ (x V)(V^T W_q), V (d_model, rank) with orthonormal columns, the top input directions of
// a block that lies wholly before the token's own block.
struct InputBasis {
  int rank = 0;
  std::vector<float> vt;         // (rank, d_model) V^T, row-major
  // The caller's cache of its weights pushed through V (W_q V), filled on first use so that every
  // token sharing the basis reuses it; it lives and dies with the basis and the policy never reads it.
  std::vector<float> projected;
};

class KvPolicy {
 public:
  virtual ~KvPolicy() = default;

  // The input basis each new token must use (out[t], null: project exactly), given the new tokens'
  // layer input X (T, d_model). Call it before Append with the same positions and X. Positions alone
  // decide which basis applies, so any chunking of the work gives the same bases. The pointers stay
  // valid until the next call of Append or InputBases. Default: every token exact.
  virtual Status InputBases(std::span<const int32_t> positions, const float* X, std::span<InputBasis*> out) {
    (void)positions, (void)X;
    std::fill(out.begin(), out.end(), nullptr);
    return Status::Ok();
  }

  // New tokens at `positions` (ascending, continuing what was appended before):
  // X (T, d_model) the layer input after the input RMSNorm, K and V (T, kv_dim) post-RoPE.
  // The policy copies what it keeps; the buffers are the caller's. Where its store refuses a page (a
  // bounded store that is full: ResourceExhausted, naming the pages), Append returns that error and
  // the policy holds a state fit only to be destroyed, which returns every page it holds (a scheduler
  // drops the sequence; it never leases past its bound: StepLeaseBytes).
  virtual Status Append(std::span<const int32_t> positions, const float* X, const float* K, const float* V) = 0;

  // O (T, q_dim) = attention of post-RoPE queries Q (T, q_dim), causal: a query at position p
  // uses only what was appended for positions <= p. All `positions` must have been appended. An error
  // (a device allocation or launch that failed) leaves O undefined: the caller must not use it.
  virtual Status Attend(std::span<const int32_t> positions, const float* Q, float* O) = 0;

  // Called after the step's Attend: drops what no later query reads (exact copies of rows that are now
  // held compressed, rows gone out of a window, rows H2O or SnapKV evict by the attention the step's
  // queries gave them: Attend only records it, so that it never changes what it reads while reading,
  // and a batched backend may run every sequence's Attend before any Update). A policy may keep them
  // until its next Append instead, since the queries of a chunk read rows a later query sees only
  // compressed; Update lets the forward pass end every step with the compact state, so that what
  // Bytes() reports between steps depends on the length alone and not on how the tokens were chunked.
  // Default: nothing to drop.
  virtual Status Update() { return Status::Ok(); }

  // Whether Append reads X. A backend whose decode step never forms X on its own (the GPU's
  // projections normalize their input in registers) forms it only for policies that say yes.
  virtual bool ReadsInput() const { return true; }

  // Prefix caching (engine/prefix_cache.h), for policies whose state after n whole blocks of
  // PagedRows::kRowsPerPage tokens is those blocks' pages and nothing else, each page written once and
  // depending on its block's tokens and those before it (dense and MX rows; not windows, blocks
  // compressed together or eviction). SharePages appends to `out` the pages of block b (b < Length() /
  // kRowsPerPage), which the caller may then hold and hand to AdoptPages of another sequence's policy,
  // and returns true; false: this policy does not share (the default).
  virtual bool SharePages(int64_t block, BlockPages* out) {
    (void)block, (void)out;
    return false;
  }
  // On an empty policy from the same factory and layer shape: takes the first blocks.size() blocks, as
  // SharePages of such a policy listed them, as if their tokens had been appended.
  virtual void AdoptPages(std::span<const BlockPages> blocks) { (void)blocks; }

  // The transient of a step, for a store with a bound (engine/kv_pool.h): an upper bound on the bytes of
  // pages the next step of `tokens` tokens (Append, Attend, then Update) leases beyond those the policy
  // holds now, counted before anything is returned, so that what it holds now plus this bounds what it
  // holds at any point of the step, the rows an Update drops included (a prompt chunk's rows before
  // eviction, an ATP block's exact rows while its principal rows form). For the state an Update left;
  // exact where the policy's forms do not depend on the data (the size of what a step leases is then
  // its tokens and the policy's state alone). Default: 0, for policies that lease no pages (the GPU's).
  virtual size_t StepLeaseBytes(int64_t tokens) const {
    (void)tokens;
    return 0;
  }

  // Exact bytes held for this sequence and layer (data plus per-block metadata).
  virtual size_t Bytes() const = 0;
  // Number of tokens appended so far.
  virtual int64_t Length() const = 0;
};

// Builds one policy per layer of a sequence from a parsed policy string.
class KvPolicyFactory {
 public:
  virtual ~KvPolicyFactory() = default;
  virtual std::unique_ptr<KvPolicy> Create(const KvShape& shape) const = 0;
  // Whether this policy can serve a layer of this shape (e.g. calibrated bases match the model).
  virtual Status CheckShape(const KvShape& shape) const { return Status::Ok(); }
  // The canonical policy string, e.g. "dense:dtype=f32" (for reports).
  virtual std::string Describe() const = 0;
  // Whether a prompt must reach Append/Attend in one call. Most policies decide by positions alone, so
  // any split of a prompt gives the same state; h2o and snapkv evict by the attention of each call's
  // queries, so their state depends on the split. Whoever feeds prompts (the scheduler) honours this,
  // and such a request's output then never depends on what else runs beside it.
  virtual bool NeedsWholePrompt() const { return false; }
};

struct KvPolicyConfig;
// The host's factory of a parsed policy (kv/policy_config.h).
std::shared_ptr<KvPolicyFactory> MakeKvFactory(const KvPolicyConfig& config);
// ParseKvConfig, then MakeKvFactory: a policy string such as "dense", "dense:dtype=bf16" or "A+B". Errors
// list valid names and keys. `model_dir` lets policies find files stored beside the model (calibrated
// bases); may be empty.
Result<std::shared_ptr<KvPolicyFactory>> ParseKvPolicy(const std::string& spec, const std::string& model_dir = "");

// Where a command gets its policies from a string: ParseKvPolicy, or a backend's own parser (the GPU's
// ParseCudaKvPolicy, whose policies only its forward pass can drive).
using KvPolicyParser =
    std::function<Result<std::shared_ptr<KvPolicyFactory>>(const std::string& spec, const std::string& model_dir)>;

}  // namespace atp
