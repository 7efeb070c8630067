#include "kv/evict_rule.h"

#include <algorithm>
#include <numeric>

namespace atp {

using Kind = EvictParams::Kind;

EvictRule::EvictRule(const EvictParams& p, int n_kv) : p_(p), heads_(size_t(n_kv)) {}

void EvictRule::Append(std::span<const int32_t> positions) {
  for (Head& h : heads_) {
    h.pos.insert(h.pos.end(), positions.begin(), positions.end());
    if (p_.kind == Kind::kH2o) h.score.resize(h.pos.size(), 0.f);
  }
}

int EvictRule::Visible(int kv_head, int32_t p, Range out[2]) const {
  const std::vector<int32_t>& pos = heads_[size_t(kv_head)].pos;
  const int64_t hz = std::upper_bound(pos.begin(), pos.end(), p) - pos.begin();  // rows of positions <= p
  const int32_t wfirst = std::max(p_.sinks, p - (p_.budget - p_.sinks) + 1);
  // Sinks and window touch (or no streaming): one range.
  if (p_.kind != Kind::kStreaming || wfirst == p_.sinks) return out[0] = {0, hz}, 1;
  const int64_t nsink = std::min<int64_t>(hz, std::lower_bound(pos.begin(), pos.end(), p_.sinks) - pos.begin());
  const int64_t wlo = std::lower_bound(pos.begin(), pos.end(), wfirst) - pos.begin();
  int n = 0;
  if (nsink > 0) out[n++] = {0, nsink};
  out[n++] = {wlo, hz};
  return n;
}

int64_t EvictRule::VotersFrom(int64_t T) const {
  if (p_.kind == Kind::kH2o) return 0;
  if (p_.kind == Kind::kSnapKv && T > 1) return T - std::min<int64_t>(p_.window, T);
  return T;
}

void EvictRule::SetVotes(std::vector<std::vector<float>> votes, int64_t voters) {
  votes_ = std::move(votes);
  voters_ = voters;
}

Status EvictRule::ApplyVotes(const Retain& retain) {
  if (votes_.empty()) return Status::Ok();
  for (int kvh = 0; kvh < int(heads_.size()); ++kvh) {
    Head& h = heads_[size_t(kvh)];
    const std::vector<float>& votes = votes_[size_t(kvh)];
    const int64_t n = int64_t(h.pos.size());
    if (p_.kind == Kind::kH2o) {
      for (int64_t j = 0; j < n; ++j) h.score[size_t(j)] += votes[size_t(j)];
      if (n > p_.budget) ATP_RETURN_IF_ERROR(EvictLowest(kvh, h.score, n - p_.recent, n - p_.budget, retain));
    } else if (n > p_.budget) {
      const int64_t older = n - voters_;  // the chunk's last rows are the window
      std::vector<float> pooled(static_cast<size_t>(older));
      const int left = (p_.pool - 1) / 2, right = p_.pool / 2;
      for (int64_t j = 0; j < older; ++j) {
        float m = votes[size_t(j)];
        for (int64_t i = std::max<int64_t>(0, j - left); i <= std::min<int64_t>(older - 1, j + right); ++i)
          m = std::max(m, votes[size_t(i)]);
        pooled[size_t(j)] = m;
      }
      ATP_RETURN_IF_ERROR(EvictLowest(kvh, pooled, older, n - p_.budget, retain));  // keeps the budget - w best-voted older rows
    }
  }
  votes_.clear();
  return Status::Ok();
}

Status EvictRule::DropUnread(int64_t next, const Retain& retain) {
  if (p_.kind != Kind::kStreaming) return Status::Ok();
  const int64_t lo = next - (p_.budget - p_.sinks) + 1;
  for (int kvh = 0; kvh < int(heads_.size()); ++kvh) {
    const std::vector<int32_t>& pos = heads_[size_t(kvh)].pos;
    std::vector<char> keep(pos.size());
    bool any = false;
    for (size_t i = 0; i < pos.size(); ++i) {
      keep[i] = pos[i] < p_.sinks || pos[i] >= lo;
      any |= !keep[i];
    }
    if (any) ATP_RETURN_IF_ERROR(Keep(kvh, keep, retain));
  }
  return Status::Ok();
}

size_t EvictRule::Bytes() const {
  size_t n = 0;
  for (const Head& h : heads_) n += h.pos.size() * sizeof(int32_t) + h.score.size() * sizeof(float);
  return n;
}

Status EvictRule::Keep(int kv_head, const std::vector<char>& keep, const Retain& retain) {
  ATP_RETURN_IF_ERROR(retain(kv_head, keep));
  Head& h = heads_[size_t(kv_head)];
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

Status EvictRule::EvictLowest(int kv_head, const std::vector<float>& key, int64_t candidates, int64_t count,
                            const Retain& retain) {
  // The `count` lowest keys, ties to the earlier row: the first `count` of a stable sort by key, found
  // in linear time (h2o evicts a row per step from hundreds or thousands; a sort per step and KV head
  // was most of its decode time).
  std::vector<int64_t> idx(static_cast<size_t>(candidates));
  std::iota(idx.begin(), idx.end(), 0);
  if (count < candidates)
    std::nth_element(idx.begin(), idx.begin() + count, idx.end(), [&](int64_t a, int64_t b) {
      return key[size_t(a)] < key[size_t(b)] || (key[size_t(a)] == key[size_t(b)] && a < b);
    });
  std::vector<char> keep(heads_[size_t(kv_head)].pos.size(), 1);
  for (int64_t i = 0; i < count; ++i) keep[size_t(idx[size_t(i)])] = 0;
  return Keep(kv_head, keep, retain);
}

}  // namespace atp
