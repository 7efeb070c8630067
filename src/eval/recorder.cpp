#include "eval/recorder.h"

#include "engine/sequence.h"

namespace atp {

namespace {

class RecordingPolicy : public KvPolicy {
 public:
  RecordingPolicy(std::unique_ptr<KvPolicy> inner, int layer, const RecordFn* fn) : inner_(std::move(inner)), layer_(layer), fn_(fn) {}
  Status Append(std::span<const int32_t> pos, const float* X, const float* K, const float* V) override {
    (*fn_)(layer_, int64_t(pos.size()), X, K, V);
    return inner_->Append(pos, X, K, V);
  }
  Status InputBases(std::span<const int32_t> pos, const float* X, std::span<InputBasis*> out) override {
    return inner_->InputBases(pos, X, out);
  }
  Status Attend(std::span<const int32_t> pos, const float* Q, float* O) override { return inner_->Attend(pos, Q, O); }
  Status Update() override { return inner_->Update(); }
  size_t Bytes() const override { return inner_->Bytes(); }
  size_t StepLeaseBytes(int64_t tokens) const override { return inner_->StepLeaseBytes(tokens); }
  int64_t Length() const override { return inner_->Length(); }

 private:
  std::unique_ptr<KvPolicy> inner_;
  int layer_;
  const RecordFn* fn_;
};

class RecordingFactory : public KvPolicyFactory {
 public:
  RecordingFactory(std::shared_ptr<KvPolicyFactory> inner, RecordFn fn) : inner_(std::move(inner)), fn_(std::move(fn)) {}
  std::unique_ptr<KvPolicy> Create(const KvShape& s) const override {
    return std::make_unique<RecordingPolicy>(inner_->Create(s), s.layer, &fn_);
  }
  std::string Describe() const override { return inner_->Describe(); }
  bool NeedsWholePrompt() const override { return inner_->NeedsWholePrompt(); }

 private:
  std::shared_ptr<KvPolicyFactory> inner_;
  RecordFn fn_;
};

}  // namespace

std::shared_ptr<KvPolicyFactory> MakeRecordingFactory(std::shared_ptr<KvPolicyFactory> inner, RecordFn fn) {
  return std::make_shared<RecordingFactory>(std::move(inner), std::move(fn));
}

Result<int> RecordWindows(LlamaModel& model, const std::vector<int32_t>& stream, int window, int max_windows,
                          const std::string& who, RecordFn fn, const std::function<Status(int, int)>& after_window) {
  if (window < 2 || window > model.config().max_position) return Status::InvalidArgument(who + ": window out of range");
  int windows = int(stream.size() / size_t(window));
  if (max_windows > 0) windows = std::min(windows, max_windows);
  if (windows == 0)
    return Status::InvalidArgument(who + ": text shorter than one window of " + std::to_string(window) + " tokens");
  ATP_ASSIGN_OR_RETURN(auto dense, ParseKvPolicy("dense"));
  auto rec = MakeRecordingFactory(dense, std::move(fn));
  std::vector<float> logits;
  for (int w = 0; w < windows; ++w) {
    Sequence seq(model, *rec);
    ATP_RETURN_IF_ERROR(RunChunk(model, seq, std::span<const int32_t>(stream.data() + size_t(w) * size_t(window), size_t(window)), false, &logits));
    ATP_RETURN_IF_ERROR(after_window(w + 1, windows));
  }
  return windows;
}

}  // namespace atp
