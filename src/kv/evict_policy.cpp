#include "kv/evict_policy.h"

#include <algorithm>

#include "core/thread_pool.h"
#include "kv/attend.h"
#include "kv/evict_rule.h"

namespace atp {

namespace {

class EvictPolicy : public KvPolicy {
 public:
  EvictPolicy(const KvShape& s, const EvictParams& p) : s_(s), rule_(p, s.n_kv_heads) {
    const std::shared_ptr<const RowCodec> codec = MakeRowCodec(p.codec.value_or(ExactForm{}));
    for (int h = 0; h < s.n_kv_heads; ++h) rows_.push_back(codec->NewStore(s.store(), s.head_dim, s.head_dim));
  }

  Status Append(std::span<const int32_t> positions, const float*, const float* K, const float* V) override {
    if (positions.empty()) return Status::Ok();
    if (positions[0] != length_)
      return Status::InvalidArgument("kv policy: position " + std::to_string(positions[0]) + " appended after " +
                                     std::to_string(length_) + " tokens");
    ATP_RETURN_IF_ERROR(rule_.ApplyVotes(Retain()));
    ATP_RETURN_IF_ERROR(rule_.DropUnread(positions[0], Retain()));
    const int64_t T = int64_t(positions.size()), kvd = s_.kv_dim();
    for (int kvh = 0; kvh < s_.n_kv_heads; ++kvh)
      ATP_RETURN_IF_ERROR(rows_[size_t(kvh)]->Append(K + kvh * s_.head_dim, kvd, V + kvh * s_.head_dim, kvd, T));
    rule_.Append(positions);
    length_ += T;
    return Status::Ok();
  }

  Status Attend(std::span<const int32_t> positions, const float* Q, float* O) override {
    const int64_t T = int64_t(positions.size());
    if (T == 0) return Status::Ok();
    ATP_RETURN_IF_ERROR(rule_.ApplyVotes(Retain()));  // a caller that attends twice without Update sees the first call's eviction
    const int group = s_.n_heads / s_.n_kv_heads;
    auto segments = [&](int64_t t, int kvh, std::vector<KvSegment>* out) {
      EvictRule::Range r[2];
      const int n = rule_.Visible(kvh, positions[size_t(t)], r);
      for (int i = 0; i < n; ++i) rows_[size_t(kvh)]->View(r[i].begin, r[i].end, r[n - 1].end, out);
    };
    // Attention weights fed back: H2O's every query, SnapKV's observation window.
    const int64_t voters_from = rule_.VotersFrom(T);
    if (voters_from == T) {
      AttendSegments(s_, T, Q, O, segments);
      return Status::Ok();
    }
    int64_t rows_max = 0;
    for (int kvh = 0; kvh < s_.n_kv_heads; ++kvh) rows_max = std::max(rows_max, rule_.rows(kvh));
    const int threads = ThreadPool::Global().size();
    // acc (threads, n_kv_heads, rows_max): per worker, so tasks never share a sum.
    std::vector<float> acc(size_t(threads) * size_t(s_.n_kv_heads) * size_t(rows_max), 0.f);
    AttendSegments(s_, T, Q, O, segments, [&](int64_t t, int head, const float* w, int64_t n, int thread) {
      if (t < voters_from) return;
      float* a = &acc[(size_t(thread) * size_t(s_.n_kv_heads) + size_t(head / group)) * size_t(rows_max)];
      for (int64_t j = 0; j < n; ++j) a[j] += w[j];
    });
    // Kept until Update (or the next Append) evicts by them: Attend changes nothing a query reads.
    std::vector<std::vector<float>> votes(size_t(s_.n_kv_heads));
    for (int kvh = 0; kvh < s_.n_kv_heads; ++kvh) {
      const int64_t n = rule_.rows(kvh);
      votes[size_t(kvh)].assign(size_t(n), 0.f);
      for (int th = 0; th < threads; ++th) {
        const float* a = &acc[(size_t(th) * size_t(s_.n_kv_heads) + size_t(kvh)) * size_t(rows_max)];
        for (int64_t j = 0; j < n; ++j) votes[size_t(kvh)][size_t(j)] += a[j];
      }
    }
    rule_.SetVotes(std::move(votes), T - voters_from);
    return Status::Ok();
  }

  size_t Bytes() const override {
    size_t n = rule_.Bytes();
    for (auto& r : rows_) n += r->Bytes();
    return n;
  }
  int64_t Length() const override { return length_; }
  // Every new row lands in each head's store before the step's Update evicts or slides anything.
  size_t StepLeaseBytes(int64_t tokens) const override {
    size_t n = 0;
    for (auto& r : rows_) n += r->AppendBytes(tokens);
    return n;
  }

  Status Update() override {
    ATP_RETURN_IF_ERROR(rule_.ApplyVotes(Retain()));
    ATP_RETURN_IF_ERROR(rule_.DropUnread(length_, Retain()));
    for (auto& r : rows_) r->Trim();
    return Status::Ok();
  }

 private:
  EvictRule::Retain Retain() {
    return [this](int kvh, const std::vector<char>& keep) { return rows_[size_t(kvh)]->Retain(keep); };
  }

  KvShape s_;
  EvictRule rule_;
  int64_t length_ = 0;
  std::vector<std::unique_ptr<RowStore>> rows_;  // per KV head: the kept rows, ascending positions
};

class EvictFactory : public KvPolicyFactory {
 public:
  explicit EvictFactory(const EvictParams& p) : p_(p) {}
  std::unique_ptr<KvPolicy> Create(const KvShape& s) const override { return std::make_unique<EvictPolicy>(s, p_); }
  bool NeedsWholePrompt() const override { return KvPolicyConfig{p_}.NeedsWholePrompt(); }
  std::string Describe() const override { return KvPolicyConfig{p_}.Describe(); }

 private:
  EvictParams p_;
};

}  // namespace

std::shared_ptr<KvPolicyFactory> MakeEvictFactory(const EvictParams& p) { return std::make_shared<EvictFactory>(p); }

}  // namespace atp
