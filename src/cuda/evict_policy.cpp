// H2O and SnapKV with rows in device memory. What is kept, what a query reads and how votes evict is
// kv/evict_rule.h's rule, the host policy's own; this policy keeps the rows. The rule evicts the same
// number of rows from every KV head, so all heads hold as many rows, in one buffer pair whose row j of
// head h is that head's j-th kept row. A query then reads one causal range: the rows kept before its
// chunk and the chunk's rows up to it, which cuda::Visibility describes by numbering row j as position
// first + j (first = the last query's position + 1 - rows). An Attend whose queries vote (h2o: all;
// snapkv: the last window of a prompt chunk) computes the votes in f32 (cuda/evict_votes.h) and copies
// them to the host without waiting; the rule gets and applies them at the next Append, Attend or
// Update, and a keep mask is applied by gathering each head's kept rows into a new buffer. Decode steps are batched with other sequences';
// h2o's votes then come from its query after the layer's batched attention (ObserveDecode).
#include "cuda/evict_policy.h"

#include <numeric>
#include <vector>

#include "cuda/device_policy.h"
#include "cuda/evict_votes.h"
#include "kv/evict_rule.h"

namespace atp {

namespace {

using cuda::DeviceArray;
using cuda::KvFormat;

class CudaEvictPolicy : public cuda::DevicePolicy {
 public:
  struct Params {
    EvictParams p;
    KvFormat f;  // the rows' form
  };
  CudaEvictPolicy(const KvShape& s, const Params& p)
      : DevicePolicy(s, p.p.kind == EvictParams::Kind::kH2o ? "h2o" : "snapkv"), rule_(p.p, s.n_kv_heads),
        k_(p.f, s.head_dim, s.n_kv_heads), v_(p.f, s.head_dim, s.n_kv_heads) {
    cudaEventCreateWithFlags(&voted_, cudaEventDisableTiming);
  }
  ~CudaEvictPolicy() override {
    cudaEventSynchronize(voted_);  // the copy into host_votes_ may still run
    cudaEventDestroy(voted_);
  }
  static Status CheckShape(const KvShape& s, const Params& p) {
    return cuda::CheckAttnShape({s.n_heads, s.n_kv_heads, s.head_dim}, p.f);
  }

  // What the CPU policy holds: the kept rows, and the rule's position (and h2o's score) per row.
  size_t Bytes() const override { return size_t(rule_.rows(0) * (k_.TokenBytes() + v_.TokenBytes())) + rule_.Bytes(); }
  Status Update() override { return Evict(); }
  bool ReadsInput() const override { return false; }

 private:
  Status Reserve(int64_t first, int64_t T, bool, std::vector<cuda::RowStore>* stores) override {
    ATP_RETURN_IF_ERROR(Evict());
    const int64_t n = rule_.rows(0);
    ATP_RETURN_IF_ERROR(k_.Reserve(n + T, n));
    ATP_RETURN_IF_ERROR(v_.Reserve(n + T, n));
    std::vector<int32_t> positions(static_cast<size_t>(T));
    std::iota(positions.begin(), positions.end(), int32_t(first));
    rule_.Append(positions);
    stores->push_back({k_.rows(), v_.rows(), n, T});
    return Status::Ok();
  }
  // The query at `last` (the newest appended, or about to be) sees every row: row j at position first + j.
  cuda::DecodeQuery View(int64_t last) override {
    cuda::DecodeQuery q;
    q.k = k_.rows(), q.v = v_.rows(), q.pos = last;
    q.vis.first = last + 1 - rule_.rows(0);
    return q;
  }
  Status Prepare(int64_t) override { return Evict(); }  // a second Attend sees the first one's eviction, as on the CPU
  // The votes are copied to pinned host memory on the forward's stream and handed to the rule when
  // next needed (Collect): the host waits once per step (at Update, after the whole forward pass is
  // queued), not once per layer in the middle of it.
  Status Observe(const float* Q, int64_t T, int64_t) override {
    const int64_t from = rule_.VotersFrom(T);
    if (from == T) return Status::Ok();
    const KvShape& s = shape();
    const int64_t n = rule_.rows(0);
    ATP_RETURN_IF_ERROR(kf_.Grow(size_t(n * s.kv_dim())));
    ATP_RETURN_IF_ERROR(lse_.Grow(size_t((T - from) * s.n_heads)));
    ATP_RETURN_IF_ERROR(votes_.Grow(size_t(n * s.n_kv_heads)));
    ATP_RETURN_IF_ERROR(host_votes_.Grow(size_t(n * s.n_kv_heads)));  // no copy pending: Prepare collected it
    cuda::LoadRowsF32(k_.rows(), 0, n, kf_.get(), nullptr);
    cuda::AttentionVotes({s.n_heads, s.n_kv_heads, s.head_dim}, kf_.get(), n, Q, T, from, n - T, lse_.get(), votes_.get(),
                         nullptr);
    ATP_RETURN_IF_ERROR(cuda::LastLaunch("eviction votes"));
    ATP_CUDA_RETURN(cudaMemcpyAsync(host_votes_.get(), votes_.get(), size_t(n * s.n_kv_heads) * sizeof(float),
                                    cudaMemcpyDeviceToHost, nullptr));
    ATP_CUDA_RETURN(cudaEventRecord(voted_, nullptr));
    pending_rows_ = n, pending_voters_ = T - from;
    return Status::Ok();
  }

  // Hands the last Observe's votes, once copied, to the rule.
  Status Collect() {
    if (pending_rows_ == 0) return Status::Ok();
    ATP_CUDA_RETURN(cudaEventSynchronize(voted_));
    const int64_t n = pending_rows_;
    std::vector<std::vector<float>> votes(size_t(shape().n_kv_heads));
    for (size_t h = 0; h < votes.size(); ++h) votes[h].assign(host_votes_.get() + h * size_t(n), host_votes_.get() + (h + 1) * size_t(n));
    rule_.SetVotes(std::move(votes), pending_voters_);
    pending_rows_ = 0;
    return Status::Ok();
  }

  // Applies the rule's pending votes to the rows.
  Status Evict() {
    ATP_RETURN_IF_ERROR(Collect());
    if (!rule_.HasVotes()) return Status::Ok();
    const int n_kv = shape().n_kv_heads;
    const int64_t had = rule_.rows(0);
    std::vector<std::vector<char>> masks(static_cast<size_t>(n_kv));
    ATP_RETURN_IF_ERROR(rule_.ApplyVotes([&](int h, const std::vector<char>& keep) {
      masks[size_t(h)] = keep;  // applied to every head at once below
      return Status::Ok();
    }));
    const int64_t n = rule_.rows(0);
    if (n == had) return Status::Ok();
    std::vector<int32_t> idx;
    idx.reserve(size_t(n * n_kv));
    for (int h = 0; h < n_kv; ++h) {
      if (rule_.rows(h) != n || int64_t(masks[size_t(h)].size()) != had)
        return Status::Corruption("cuda eviction: KV heads would keep different numbers of rows");
      for (int64_t j = 0; j < had; ++j)
        if (masks[size_t(h)][size_t(j)]) idx.push_back(int32_t(j));
    }
    // Uploaded without waiting from pinned memory, which the next Evict rewrites only after Collect
    // waited for an event recorded after this copy.
    ATP_RETURN_IF_ERROR(idx_.Grow(idx.size()));
    ATP_RETURN_IF_ERROR(host_idx_.Grow(idx.size()));
    std::copy(idx.begin(), idx.end(), host_idx_.get());
    ATP_CUDA_RETURN(cudaMemcpyAsync(idx_.get(), host_idx_.get(), idx.size() * sizeof(int32_t), cudaMemcpyHostToDevice, nullptr));
    ATP_RETURN_IF_ERROR(k_.Gather(idx_.get(), n, n));
    return v_.Gather(idx_.get(), n, n);
  }

  EvictRule rule_;
  cuda::RowBuffer k_, v_;  // row j of head h: that head's j-th kept row
  DeviceArray<float> kf_, lse_, votes_;  // Observe's scratch: the keys in f32, the voters' log-sum-exps, the votes
  DeviceArray<int32_t> idx_;             // Evict's kept rows per head
  cuda::PinnedArray<float> host_votes_;  // the last Observe's votes, (n_kv, rows), copied on the forward's stream
  cuda::PinnedArray<int32_t> host_idx_;  // Evict's kept rows, uploaded on the forward's stream
  cudaEvent_t voted_ = nullptr;          // recorded after that copy
  int64_t pending_rows_ = 0, pending_voters_ = 0;  // rows > 0: votes copied but not yet handed to the rule
};

}  // namespace

Result<std::shared_ptr<KvPolicyFactory>> MakeCudaEvictFactory(const EvictParams& p, KvFormat rows,
                                                              const std::string& describe) {
  return cuda::MakeDevicePolicyFactory<CudaEvictPolicy>({p, rows}, describe, KvPolicyConfig{p}.NeedsWholePrompt());
}

}  // namespace atp
