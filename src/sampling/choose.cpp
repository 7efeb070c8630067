#include "sampling/choose.h"

#include <algorithm>

#include "sampling/rules.h"

namespace atp {

using sampling::OrderKey;
using sampling::RanksBefore;

int32_t TopToken(std::span<const float> logits) {
  int32_t best = 0;
  uint32_t best_key = logits.empty() ? 0 : OrderKey(logits[0]);
  for (size_t i = 1; i < logits.size(); ++i) {
    const uint32_t k = OrderKey(logits[i]);
    if (k > best_key) best_key = k, best = int32_t(i);
  }
  return best;
}

float LogProb(std::span<const float> logits, int32_t id) {
  const float mx = logits[size_t(TopToken(logits))];
  double s = 0;
  for (float l : logits) s += sampling::LseTerm(l, mx);
  return float(double(logits[size_t(id)] - mx) - std::log(s));
}

TokenChoice HostChooser::Choose(std::span<const float> logits, const TokenQuery& q) {
  const SamplingParams& p = q.params;
  std::span<const float> l = logits;
  if (p.repetition_penalty != 1.0f && !q.history.empty()) {
    // From the raw logits, so a token repeated in the history is penalized once.
    pen_.assign(logits.begin(), logits.end());
    for (int32_t t : q.history)
      if (t >= 0 && size_t(t) < logits.size()) pen_[size_t(t)] = sampling::Penalize(logits[size_t(t)], p.repetition_penalty);
    l = pen_;
  }
  TokenChoice out;
  out.id = p.temperature == 0 ? TopToken(l) : Draw(l, q);
  if (q.top_logprobs >= 0) Logprobs(logits, q.top_logprobs, &out);
  return out;
}

int32_t HostChooser::Draw(std::span<const float> l, const TokenQuery& q) {
  const SamplingParams& p = q.params;
  const auto V = int32_t(l.size());
  const float mx = l[size_t(TopToken(l))], inv_temp = 1.0f / p.temperature;
  cand_.resize(size_t(V));
  for (int32_t i = 0; i < V; ++i) {
    const float x = l[size_t(i)];
    cand_[size_t(i)] = {OrderKey(x), i, sampling::Weight(x, mx, inv_temp)};
  }
  const auto before = [](const Cand& a, const Cand& b) { return RanksBefore(a.key, a.id, b.key, b.id); };
  // The top-k prefix (unordered), and Z, its weight.
  auto end = cand_.end();
  if (p.top_k > 0 && p.top_k < V) {
    end = cand_.begin() + p.top_k;
    std::nth_element(cand_.begin(), end - 1, cand_.end(), before);
  }
  double z = 0;
  for (auto it = cand_.begin(); it != end; ++it) z += it->w;
  // min_p keeps a prefix of the rank order (the weight falls along it), so it can go before the sort,
  // which then sees only what min_p kept.
  end = std::partition(cand_.begin(), end, [&](const Cand& c) { return c.w >= p.min_p; });
  if (p.top_p < 1) {
    std::sort(cand_.begin(), end, before);
    const double target = double(p.top_p) * z;
    double c = 0;
    for (auto it = cand_.begin(); it != end; ++it)
      if ((c += it->w) >= target) {
        end = it + 1;
        break;
      }
  }
  // The draw over what is kept, in id order.
  std::sort(cand_.begin(), end, [](const Cand& a, const Cand& b) { return a.id < b.id; });
  double total = 0;
  for (auto it = cand_.begin(); it != end; ++it) total += it->w;
  const double target = sampling::Uniform(p.seed, q.draw) * total;
  double c = 0;
  int32_t last = -1;
  for (auto it = cand_.begin(); it != end; ++it) {
    if (!(it->w > 0)) continue;
    last = it->id;
    if ((c += it->w) >= target) return last;
  }
  return last >= 0 ? last : TopToken(l);  // the top token has weight 1 unless the row holds NaN
}

void HostChooser::Logprobs(std::span<const float> raw, int n, TokenChoice* out) {
  const float mx = raw[size_t(TopToken(raw))];
  double s = 0;
  for (float x : raw) s += sampling::LseTerm(x, mx);
  const float lse = sampling::LogSumExp(mx, s);
  out->logprob = raw[size_t(out->id)] - lse;
  out->top.clear();
  if (n <= 0) return;
  const size_t k = std::min(size_t(n), raw.size());
  cand_.resize(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) cand_[i] = {OrderKey(raw[i]), int32_t(i), 0};
  std::partial_sort(cand_.begin(), cand_.begin() + long(k), cand_.end(),
                    [](const Cand& a, const Cand& b) { return RanksBefore(a.key, a.id, b.key, b.id); });
  for (size_t j = 0; j < k; ++j) out->top.emplace_back(cand_[j].id, raw[size_t(cand_[j].id)] - lse);
}

}  // namespace atp
