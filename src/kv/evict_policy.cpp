#include "kv/evict_policy.h"

#include <algorithm>
#include <numeric>

#include "core/thread_pool.h"
#include "kv/attend.h"

namespace atp {

namespace {

enum class Kind { kStreaming, kH2o, kSnapKv };

struct EvictParams {
  Kind kind = Kind::kStreaming;
  int budget = 256;
  int sinks = 4;     // streaming
  int recent = 128;  // h2o
  int window = 32;   // snapkv observation window
  int pool = 7;      // snapkv pooling kernel
  std::shared_ptr<const RowCodec> codec;  // never null here
  bool default_codec = true;
};

class EvictPolicy : public KvPolicy {
 public:
  EvictPolicy(const KvShape& s, const EvictParams& p) : s_(s), p_(p), heads_(size_t(s.n_kv_heads)) {
    for (auto& h : heads_) h.rows = p.codec->NewStore(s.store(), s.head_dim, s.head_dim);
  }

  Status Append(std::span<const int32_t> positions, const float*, const float* K, const float* V) override {
    if (positions.empty()) return Status::Ok();
    if (positions[0] != length_)
      return Status::InvalidArgument("kv policy: position " + std::to_string(positions[0]) + " appended after " +
                                     std::to_string(length_) + " tokens");
    ATP_RETURN_IF_ERROR(ApplyVotes());
    ATP_RETURN_IF_ERROR(DropUnread(positions[0]));
    const int64_t T = int64_t(positions.size()), kvd = s_.kv_dim();
    for (int kvh = 0; kvh < s_.n_kv_heads; ++kvh) {
      Head& h = heads_[size_t(kvh)];
      ATP_RETURN_IF_ERROR(h.rows->Append(K + kvh * s_.head_dim, kvd, V + kvh * s_.head_dim, kvd, T));
      h.pos.insert(h.pos.end(), positions.begin(), positions.end());
      if (p_.kind == Kind::kH2o) h.score.resize(h.pos.size(), 0.f);
    }
    length_ += T;
    return Status::Ok();
  }

  Status Attend(std::span<const int32_t> positions, const float* Q, float* O) override {
    const int64_t T = int64_t(positions.size());
    if (T == 0) return Status::Ok();
    ATP_RETURN_IF_ERROR(ApplyVotes());  // a caller that attends twice without Update sees the first call's eviction, as it always did
    const int group = s_.n_heads / s_.n_kv_heads;
    auto segments = [&](int64_t t, int kvh, std::vector<KvSegment>* out) {
      const Head& h = heads_[size_t(kvh)];
      const int32_t p = positions[size_t(t)];
      const int64_t hz = std::upper_bound(h.pos.begin(), h.pos.end(), p) - h.pos.begin();  // rows of positions <= p
      if (p_.kind != Kind::kStreaming) return h.rows->View(0, hz, hz, out);
      const int64_t nsink = std::min<int64_t>(hz, std::lower_bound(h.pos.begin(), h.pos.end(), p_.sinks) - h.pos.begin());
      const int32_t wfirst = std::max(p_.sinks, p - (p_.budget - p_.sinks) + 1);
      const int64_t wlo = std::lower_bound(h.pos.begin(), h.pos.end(), wfirst) - h.pos.begin();
      // Sinks and window touch: one range. Otherwise two, split by position (not by what happens to
      // be stored), so every chunking hands the kernels the same segments.
      if (wfirst == p_.sinks) return h.rows->View(0, hz, hz, out);
      if (nsink > 0) h.rows->View(0, nsink, hz, out);
      h.rows->View(wlo, hz, hz, out);
    };
    // Attention weights fed back: H2O accumulates all queries, SnapKV the chunk's observation window.
    const bool snap = p_.kind == Kind::kSnapKv && T > 1;
    const int64_t obs_from = snap ? T - std::min<int64_t>(p_.window, T) : T;
    if (p_.kind == Kind::kStreaming || (p_.kind == Kind::kSnapKv && !snap)) {
      AttendSegments(s_, T, Q, O, segments);
      return Status::Ok();
    }
    int64_t rows_max = 0;
    for (auto& h : heads_) rows_max = std::max<int64_t>(rows_max, int64_t(h.pos.size()));
    const int threads = ThreadPool::Global().size();
    // acc (threads, n_kv_heads, rows_max): per worker, so tasks never share a sum.
    std::vector<float> acc(size_t(threads) * size_t(s_.n_kv_heads) * size_t(rows_max), 0.f);
    AttendSegments(s_, T, Q, O, segments, [&](int64_t t, int head, const float* w, int64_t n, int thread) {
      if (t < obs_from && p_.kind == Kind::kSnapKv) return;
      float* a = &acc[(size_t(thread) * size_t(s_.n_kv_heads) + size_t(head / group)) * size_t(rows_max)];
      for (int64_t j = 0; j < n; ++j) a[j] += w[j];
    });
    // Kept until Update (or the next Append) evicts by them: Attend changes nothing a query reads.
    votes_.assign(size_t(s_.n_kv_heads), {});
    votes_window_ = T - obs_from;
    for (int kvh = 0; kvh < s_.n_kv_heads; ++kvh) {
      const int64_t n = int64_t(heads_[size_t(kvh)].pos.size());
      std::vector<float>& votes = votes_[size_t(kvh)];
      votes.assign(size_t(n), 0.f);
      for (int th = 0; th < threads; ++th) {
        const float* a = &acc[(size_t(th) * size_t(s_.n_kv_heads) + size_t(kvh)) * size_t(rows_max)];
        for (int64_t j = 0; j < n; ++j) votes[size_t(j)] += a[j];
      }
    }
    return Status::Ok();
  }

  size_t Bytes() const override {
    size_t n = 0;
    for (auto& h : heads_) n += h.rows->Bytes() + h.pos.size() * sizeof(int32_t) + h.score.size() * sizeof(float);
    return n;
  }
  int64_t Length() const override { return length_; }
  // Every new row lands in each head's store before the step's Update evicts or slides anything.
  size_t StepLeaseBytes(int64_t tokens) const override {
    size_t n = 0;
    for (auto& h : heads_) n += h.rows->AppendBytes(tokens);
    return n;
  }

  Status Update() override {
    ATP_RETURN_IF_ERROR(ApplyVotes());
    ATP_RETURN_IF_ERROR(DropUnread(length_));
    for (auto& h : heads_) h.rows->Trim();
    return Status::Ok();
  }

 private:
  struct Head {
    std::unique_ptr<RowStore> rows;  // retained rows, ascending positions
    std::vector<int32_t> pos;        // position of each row
    std::vector<float> score;        // h2o: accumulated attention of each row
  };

  // H2O and SnapKV: the attention the last Attend gave each row decides what goes (H2O: the
  // accumulated score beyond the recent rows; SnapKV: the observation window's votes, max-pooled).
  Status ApplyVotes() {
    if (votes_.empty()) return Status::Ok();
    for (int kvh = 0; kvh < s_.n_kv_heads; ++kvh) {
      Head& h = heads_[size_t(kvh)];
      const std::vector<float>& votes = votes_[size_t(kvh)];
      const int64_t n = int64_t(h.pos.size());
      if (p_.kind == Kind::kH2o) {
        for (int64_t j = 0; j < n; ++j) h.score[size_t(j)] += votes[size_t(j)];
        if (n > p_.budget) ATP_RETURN_IF_ERROR(EvictLowest(h, h.score, n - p_.recent, n - p_.budget));
      } else if (n > p_.budget) {
        const int64_t older = n - votes_window_;  // the chunk's last rows are the window
        std::vector<float> pooled(static_cast<size_t>(older));
        const int left = (p_.pool - 1) / 2, right = p_.pool / 2;
        for (int64_t j = 0; j < older; ++j) {
          float m = votes[size_t(j)];
          for (int64_t i = std::max<int64_t>(0, j - left); i <= std::min<int64_t>(older - 1, j + right); ++i)
            m = std::max(m, votes[size_t(i)]);
          pooled[size_t(j)] = m;
        }
        ATP_RETURN_IF_ERROR(EvictLowest(h, pooled, older, n - p_.budget));  // keeps the budget - w best-voted older rows
      }
    }
    votes_.clear();
    return Status::Ok();
  }

  // Streaming: no query from position `next` on reads a non-sink position older than next - window + 1.
  Status DropUnread(int64_t next) {
    if (p_.kind != Kind::kStreaming) return Status::Ok();
    const int64_t lo = next - (p_.budget - p_.sinks) + 1;
    for (auto& h : heads_) {
      std::vector<char> keep(h.pos.size());
      bool any = false;
      for (size_t i = 0; i < h.pos.size(); ++i) {
        keep[i] = h.pos[i] < p_.sinks || h.pos[i] >= lo;
        any |= !keep[i];
      }
      if (any) ATP_RETURN_IF_ERROR(Retain(h, keep));
    }
    return Status::Ok();
  }

  Status Retain(Head& h, const std::vector<char>& keep) {
    ATP_RETURN_IF_ERROR(h.rows->Retain(keep));
    size_t w = 0;
    for (size_t i = 0; i < keep.size(); ++i)
      if (keep[i]) {
        h.pos[w] = h.pos[i];
        if (!h.score.empty()) h.score[w] = h.score[i];
        ++w;
      }
    h.pos.resize(w);
    if (!h.score.empty()) h.score.resize(w);
    return Status::Ok();
  }

  // Evicts the `count` rows with the lowest key among rows [0, candidates), older first on ties.
  Status EvictLowest(Head& h, const std::vector<float>& key, int64_t candidates, int64_t count) {
    std::vector<int64_t> idx(static_cast<size_t>(candidates));
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return key[size_t(a)] < key[size_t(b)]; });
    std::vector<char> keep(h.pos.size(), 1);
    for (int64_t i = 0; i < count; ++i) keep[size_t(idx[size_t(i)])] = 0;
    return Retain(h, keep);
  }

  KvShape s_;
  EvictParams p_;
  int64_t length_ = 0;
  std::vector<Head> heads_;  // per KV head
  std::vector<std::vector<float>> votes_;  // per KV head: the last Attend's attention per row; empty once applied
  int64_t votes_window_ = 0;               // snapkv: rows of that chunk's observation window
};

class EvictFactory : public KvPolicyFactory {
 public:
  explicit EvictFactory(const EvictParams& p) : p_(p) {}
  std::unique_ptr<KvPolicy> Create(const KvShape& s) const override { return std::make_unique<EvictPolicy>(s, p_); }
  bool NeedsWholePrompt() const override { return p_.kind != Kind::kStreaming; }
  std::string Describe() const override {
    std::string d;
    switch (p_.kind) {
      case Kind::kStreaming: d = "streaming:budget=" + std::to_string(p_.budget) + ",sinks=" + std::to_string(p_.sinks); break;
      case Kind::kH2o: d = "h2o:budget=" + std::to_string(p_.budget) + ",recent=" + std::to_string(p_.recent); break;
      case Kind::kSnapKv:
        d = "snapkv:budget=" + std::to_string(p_.budget) + ",window=" + std::to_string(p_.window) + ",pool=" + std::to_string(p_.pool);
        break;
    }
    return DescribeWithCodec(d, p_.default_codec ? nullptr : p_.codec.get());
  }

 private:
  EvictParams p_;
};

Result<std::shared_ptr<KvPolicyFactory>> Finish(EvictParams p, std::shared_ptr<const RowCodec> codec) {
  p.default_codec = codec == nullptr;
  p.codec = codec ? std::move(codec) : MakeExactCodec(DType::kF32);
  return std::shared_ptr<KvPolicyFactory>(std::make_shared<EvictFactory>(p));
}

}  // namespace

Result<std::shared_ptr<KvPolicyFactory>> MakeStreamingFactory(const PolicySpec& spec, std::shared_ptr<const RowCodec> codec) {
  ATP_RETURN_IF_ERROR(spec.CheckKeys({{"budget", "tokens kept per KV head (sinks + window), default 256"},
                                      {"sinks", "first tokens always kept, default 4"}}));
  EvictParams p;
  p.kind = Kind::kStreaming;
  ATP_ASSIGN_OR_RETURN(p.budget, spec.Int("budget", 256, 1, 1 << 24));
  ATP_ASSIGN_OR_RETURN(p.sinks, spec.Int("sinks", std::min(4, p.budget - 1), 0, 1 << 24));
  if (p.sinks >= p.budget)
    return Status::InvalidArgument("kv policy 'streaming': sinks=" + std::to_string(p.sinks) + " must be below budget=" +
                                   std::to_string(p.budget));
  return Finish(p, std::move(codec));
}

Result<std::shared_ptr<KvPolicyFactory>> MakeH2oFactory(const PolicySpec& spec, std::shared_ptr<const RowCodec> codec) {
  ATP_RETURN_IF_ERROR(spec.CheckKeys({{"budget", "tokens kept per KV head (heavy hitters + recent), default 256"},
                                      {"recent", "newest tokens never evicted, default budget/2"}}));
  EvictParams p;
  p.kind = Kind::kH2o;
  ATP_ASSIGN_OR_RETURN(p.budget, spec.Int("budget", 256, 1, 1 << 24));
  ATP_ASSIGN_OR_RETURN(p.recent, spec.Int("recent", p.budget / 2, 0, p.budget));
  return Finish(p, std::move(codec));
}

Result<std::shared_ptr<KvPolicyFactory>> MakeSnapKvFactory(const PolicySpec& spec, std::shared_ptr<const RowCodec> codec) {
  ATP_RETURN_IF_ERROR(spec.CheckKeys({{"budget", "tokens kept per KV head after a prompt, default 256"},
                                      {"window", "observation window: last queries of the prompt that vote, default 32"},
                                      {"pool", "max-pooling kernel over neighbouring votes, default 7 (1: none)"}}));
  EvictParams p;
  p.kind = Kind::kSnapKv;
  ATP_ASSIGN_OR_RETURN(p.budget, spec.Int("budget", 256, 2, 1 << 24));
  ATP_ASSIGN_OR_RETURN(p.window, spec.Int("window", std::min(32, p.budget - 1), 1, 1 << 24));
  ATP_ASSIGN_OR_RETURN(p.pool, spec.Int("pool", 7, 1, 1 << 16));
  if (p.window >= p.budget)
    return Status::InvalidArgument("kv policy 'snapkv': window=" + std::to_string(p.window) + " must be below budget=" +
                                   std::to_string(p.budget));
  return Finish(p, std::move(codec));
}

}  // namespace atp
