// StreamingLLM with rows in device memory: a query at p reads the S sink positions [0, S) and the
// newest W = budget - S positions <= p. The sinks are copied to a buffer of their own as they
// arrive; every position lives in an ExactTail that drops what no later query reads. A query sees
// both through cuda::Visibility: blocks of one row, window W - 1 (exact rows from p - W + 1 on), the
// sinks as principal rows capped at S. Chunk-invariant like the CPU policy, which reads the same
// rows in the same two segments.
#include "cuda/streaming_policy.h"

#include <algorithm>

#include "cuda/device_policy.h"

namespace atp {

namespace {

using cuda::KvFormat;

class CudaStreamingPolicy : public KvPolicy, public cuda::DecodePlanner {
 public:
  CudaStreamingPolicy(const KvShape& s, int budget, int sinks, KvFormat f)
      : s_(s), sinks_(sinks), window_(budget - sinks), tail_(f, s.head_dim, s.n_kv_heads),
        sink_k_(f, s.head_dim, s.n_kv_heads), sink_v_(f, s.head_dim, s.n_kv_heads) {}

  Status Append(std::span<const int32_t> positions, const float*, const float* K, const float* V) override {
    const int64_t T = int64_t(positions.size());
    if (T == 0) return Status::Ok();
    const int64_t n = T * s_.kv_dim();
    std::vector<cuda::RowStore> stores;
    ATP_RETURN_IF_ERROR(Reserve(positions[0], T, &stores));
    const float* dk = k_in_.Get(K, size_t(n));
    const float* dv = v_in_.Get(V, size_t(n));
    if (!dk || !dv) return Status::ResourceExhausted("cuda streaming policy: cannot stage appended rows");
    ATP_RETURN_IF_ERROR(cuda::StoreRows(stores, dk, dv, nullptr));
    len_ += T;
    return Status::Ok();
  }

  Status Attend(std::span<const int32_t> positions, const float* Q, float* O) override {
    if (positions.empty()) return Status::Ok();
    return attention_.Run(s_, View(positions.back()), positions, Q, O);
  }

  Status PlanDecode(int32_t pos, std::vector<cuda::RowStore>* stores, cuda::DecodeQuery* query) override {
    ATP_RETURN_IF_ERROR(Reserve(pos, 1, stores));
    *query = View(pos);
    return Status::Ok();
  }
  Status FinishDecode(const float*) override {
    ++len_;
    return Status::Ok();
  }

  // What the CPU policy holds: the rows it keeps (sinks, and positions from keep_from_ on) and a
  // position per row and KV head (this policy derives positions from the length instead, so it
  // holds those 4 bytes per row and KV head less).
  size_t Bytes() const override {
    const int64_t sinks_apart = std::min<int64_t>(keep_from_, sinks_), rows = len_ - keep_from_ + sinks_apart;
    return size_t(tail_.Bytes(len_) + sinks_apart * (sink_k_.TokenBytes() + sink_v_.TokenBytes()) +
                  rows * 4 * s_.n_kv_heads);
  }
  int64_t Length() const override { return len_; }
  Status Update() override {  // as the CPU policy: the next query (at len_) reads from len_ - W + 1 on
    keep_from_ = std::max<int64_t>(keep_from_, len_ - window_ + 1);
    tail_.Release(keep_from_);
    return Status::Ok();
  }
  bool ReadsInput() const override { return false; }

 private:
  // Room for T tokens from position pos (= len_): the sinks among them go to the sink rows too.
  Status Reserve(int32_t pos, int64_t T, std::vector<cuda::RowStore>* stores) {
    ATP_RETURN_IF_ERROR(cuda::CheckContinues("streaming", pos, len_));
    if (len_ < sinks_) {
      ATP_RETURN_IF_ERROR(sink_k_.Reserve(sinks_, len_));
      ATP_RETURN_IF_ERROR(sink_v_.Reserve(sinks_, len_));
      stores->push_back({sink_k_.rows(), sink_v_.rows(), len_, std::min<int64_t>(T, sinks_ - len_)});
    }
    // The chunk's first query (at len_) reads exact rows from len_ - W + 1 on, later ones from later.
    keep_from_ = std::max<int64_t>(0, len_ - window_ + 1);
    ATP_ASSIGN_OR_RETURN(const int64_t row, tail_.Room(len_, keep_from_, T, [] {}));
    stores->push_back({tail_.k(), tail_.v(), row, T});
    return Status::Ok();
  }

  // What a query at `last` sees: the sinks as principal rows capped at S, then its window (blocks of
  // one row, window W - 1).
  cuda::DecodeQuery View(int64_t last) const {
    cuda::DecodeQuery q;
    q.k = tail_.k(), q.v = tail_.v(), q.pos = last;
    cuda::Visibility& vis = q.vis;
    vis.first = tail_.first(), vis.block = 1, vis.window = window_ - 1, vis.max_pre = sinks_;
    vis.pk = sink_k_.rows(), vis.pv = sink_v_.rows(), vis.rows_per_block = 1;
    vis.last_pre = std::min<int64_t>(cuda::CompressedBlocks(vis.block, vis.window, last), sinks_);
    return q;
  }

  KvShape s_;
  int64_t sinks_, window_;
  int64_t len_ = 0, keep_from_ = 0;
  cuda::ExactTail tail_;
  cuda::RowBuffer sink_k_, sink_v_;  // positions [0, min(len_, S))
  cuda::StagedAttention attention_;
  cuda::DeviceInput k_in_, v_in_;
};

class CudaStreamingFactory : public KvPolicyFactory {
 public:
  CudaStreamingFactory(int budget, int sinks, KvFormat f, std::string describe)
      : budget_(budget), sinks_(sinks), f_(f), describe_(std::move(describe)) {}
  std::unique_ptr<KvPolicy> Create(const KvShape& s) const override {
    return std::make_unique<CudaStreamingPolicy>(s, budget_, sinks_, f_);
  }
  Status CheckShape(const KvShape& s) const override {
    return cuda::CheckAttnShape({s.n_heads, s.n_kv_heads, s.head_dim}, f_);
  }
  std::string Describe() const override { return describe_; }

 private:
  int budget_, sinks_;
  KvFormat f_;
  std::string describe_;
};

}  // namespace

Result<std::shared_ptr<KvPolicyFactory>> MakeCudaStreamingFactory(const PolicySpec& policy, KvFormat rows,
                                                                  const std::string& describe) {
  ATP_ASSIGN_OR_RETURN(int budget, policy.Int("budget", 256, 1, 1 << 24));
  ATP_ASSIGN_OR_RETURN(int sinks, policy.Int("sinks", 4, 0, budget - 1));
  return std::shared_ptr<KvPolicyFactory>(std::make_shared<CudaStreamingFactory>(budget, sinks, rows, describe));
}

}  // namespace atp
