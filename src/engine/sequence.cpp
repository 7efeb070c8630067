#include "engine/sequence.h"

namespace atp {

Sequence::Sequence(const LlamaModel& model, const KvPolicyFactory& factory, PageStore* pages)
    : account_(std::make_unique<PageStore>(pages ? *pages : PageStore::Process())) {
  for (int l = 0; l < model.config().num_layers; ++l) {
    KvShape shape = model.kv_shape(l);
    shape.pages = account_.get();
    layers_.push_back(factory.Create(shape));
    ptrs_.push_back(layers_.back().get());
  }
}

Sequence& Sequence::operator=(Sequence&& o) noexcept {
  ptrs_.clear();
  layers_.clear();
  account_ = std::move(o.account_);
  layers_ = std::move(o.layers_);
  ptrs_ = std::move(o.ptrs_);
  length_ = o.length_;
  return *this;
}

size_t Sequence::kv_bytes() const {
  size_t n = 0;
  for (auto& l : layers_) n += l->Bytes();
  return n;
}

size_t Sequence::StepLeaseBound(int64_t tokens) const {
  size_t n = leased_bytes();
  for (auto& l : layers_) n += l->StepLeaseBytes(tokens);
  return n;
}

Status RunChunk(LlamaModel& model, Sequence& seq, std::span<const int32_t> tokens, bool all_logits,
                std::vector<float>* logits) {
  ForwardItem item{seq.kv(), tokens, seq.length(), all_logits};
  ATP_RETURN_IF_ERROR(model.Forward(std::span<const ForwardItem>(&item, 1), logits));
  seq.Advance(int32_t(tokens.size()));
  return Status::Ok();
}

}  // namespace atp
