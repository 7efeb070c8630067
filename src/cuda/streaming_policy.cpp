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

class CudaStreamingPolicy : public cuda::DevicePolicy {
 public:
  struct Params {
    int budget, sinks;
    KvFormat f;  // the rows' form
  };
  CudaStreamingPolicy(const KvShape& s, const Params& p)
      : DevicePolicy(s, "streaming"), sinks_(p.sinks), window_(p.budget - p.sinks),
        tail_(p.f, s.head_dim, s.n_kv_heads), sink_k_(p.f, s.head_dim, s.n_kv_heads),
        sink_v_(p.f, s.head_dim, s.n_kv_heads) {}
  static Status CheckShape(const KvShape& s, const Params& p) {
    return cuda::CheckAttnShape({s.n_heads, s.n_kv_heads, s.head_dim}, p.f);
  }

  // What the CPU policy holds: the rows it keeps (sinks, and positions from keep_from_ on) and a
  // position per row and KV head (this policy derives positions from the length instead, so it
  // holds those 4 bytes per row and KV head less).
  size_t Bytes() const override {
    const int64_t len = Length(), sinks_apart = std::min<int64_t>(keep_from_, sinks_);
    const int64_t rows = len - keep_from_ + sinks_apart;
    return size_t(tail_.Bytes(len) + sinks_apart * (sink_k_.TokenBytes() + sink_v_.TokenBytes()) +
                  rows * 4 * shape().n_kv_heads);
  }
  Status Update() override {  // as the CPU policy: the next query (at len) reads from len - W + 1 on
    keep_from_ = std::max<int64_t>(keep_from_, Length() - window_ + 1);
    tail_.Release(keep_from_);
    return Status::Ok();
  }
  bool ReadsInput() const override { return false; }

 private:
  // Room for T tokens from position first (= Length()): the sinks among them go to the sink rows too.
  Status Reserve(int64_t first, int64_t T, bool, std::vector<cuda::RowStore>* stores) override {
    if (first < sinks_) {
      ATP_RETURN_IF_ERROR(sink_k_.Reserve(sinks_, first));
      ATP_RETURN_IF_ERROR(sink_v_.Reserve(sinks_, first));
      stores->push_back({sink_k_.rows(), sink_v_.rows(), first, std::min<int64_t>(T, sinks_ - first)});
    }
    // The chunk's first query (at first) reads exact rows from first - W + 1 on, later ones from later.
    keep_from_ = std::max<int64_t>(0, first - window_ + 1);
    ATP_ASSIGN_OR_RETURN(const int64_t row, tail_.Room(first, keep_from_, T, [] {}));
    stores->push_back({tail_.k(), tail_.v(), row, T});
    return Status::Ok();
  }

  // What a query at `last` sees: the sinks as principal rows capped at S, then its window (blocks of
  // one row, window W - 1).
  cuda::DecodeQuery View(int64_t last) override {
    cuda::DecodeQuery q;
    q.k = tail_.k(), q.v = tail_.v(), q.pos = last;
    cuda::Visibility& vis = q.vis;
    vis.first = tail_.first(), vis.block = 1, vis.window = window_ - 1, vis.max_pre = sinks_;
    vis.pk = sink_k_.rows(), vis.pv = sink_v_.rows(), vis.rows_per_block = 1;
    vis.last_pre = std::min<int64_t>(cuda::CompressedBlocks(vis.block, vis.window, last), sinks_);
    return q;
  }

  int64_t sinks_, window_;
  int64_t keep_from_ = 0;
  cuda::ExactTail tail_;
  cuda::RowBuffer sink_k_, sink_v_;  // positions [0, min(Length(), S))
};

}  // namespace

Result<std::shared_ptr<KvPolicyFactory>> MakeCudaStreamingFactory(const EvictParams& p, KvFormat rows,
                                                                  const std::string& describe) {
  return cuda::MakeDevicePolicyFactory<CudaStreamingPolicy>({p.budget, p.sinks, rows}, describe);
}

}  // namespace atp
