// One sequence's state: its KV policy per layer and how many tokens it holds.
#pragma once
#include <memory>
#include <vector>

#include "kv/kv_policy.h"
#include "model/llama.h"

namespace atp {

class Sequence {
 public:
  // The policies lease their host-side pages from `pages` (null: the process's store), which must
  // outlive the sequence, through an account of the sequence's own (leased_bytes).
  Sequence(const LlamaModel& model, const KvPolicyFactory& factory, PageStore* pages = nullptr);
  Sequence(Sequence&&) = default;
  Sequence& operator=(Sequence&& o) noexcept;  // the old policies return their pages before their account goes

  std::span<KvPolicy* const> kv() const { return ptrs_; }
  int32_t length() const { return length_; }
  void Advance(int32_t n) { length_ += n; }
  size_t kv_bytes() const;  // sum of Bytes() over layers
  // Bytes of the store's pages the policies hold now, shared ones included (0 for device policies,
  // which keep buffers of their own).
  size_t leased_bytes() const { return account_->leased_bytes(); }
  // An upper bound on leased_bytes() at any point of a step of `tokens` tokens (KvPolicy::StepLeaseBytes).
  size_t StepLeaseBound(int64_t tokens) const;

 private:
  std::unique_ptr<PageStore> account_;  // declared first: the policies return their pages to it as they die
  std::vector<std::unique_ptr<KvPolicy>> layers_;
  std::vector<KvPolicy*> ptrs_;
  int32_t length_ = 0;
};

// Runs `tokens` through the model as one chunk of `seq` (prefill or a decode step), advancing it.
// logits: vocab floats for every token (all_logits) or the last one; null: left with the model for
// LlamaModel::ChooseTokens (row 0, or row i for token i with all_logits).
Status RunChunk(LlamaModel& model, Sequence& seq, std::span<const int32_t> tokens, bool all_logits,
                std::vector<float>* logits);

}  // namespace atp
