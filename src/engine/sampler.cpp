#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace atp {

Status SamplingParams::Validate() const {
  if (!(temperature >= 0 && temperature <= 100)) return Status::InvalidArgument("temperature must be in [0, 100]");
  if (top_k < 0) return Status::InvalidArgument("top_k must be >= 0");
  if (!(top_p > 0 && top_p <= 1)) return Status::InvalidArgument("top_p must be in (0, 1]");
  if (!(min_p >= 0 && min_p <= 1)) return Status::InvalidArgument("min_p must be in [0, 1]");
  if (!(repetition_penalty > 0 && repetition_penalty <= 10))
    return Status::InvalidArgument("repetition_penalty must be in (0, 10]");
  return Status::Ok();
}

int32_t Sampler::Sample(std::span<const float> logits, std::span<const int32_t> history) {
  const int32_t V = int32_t(logits.size());
  cand_.resize(size_t(V));
  for (int32_t i = 0; i < V; ++i) cand_[size_t(i)] = {logits[size_t(i)], i};
  if (p_.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen(history.begin(), history.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= V) continue;
      float& l = cand_[size_t(id)].first;
      l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
    }
  }
  if (p_.temperature == 0) {
    auto best = std::max_element(cand_.begin(), cand_.end(),
                                 [](auto& a, auto& b) { return a.first < b.first || (a.first == b.first && a.second > b.second); });
    return best->second;
  }
  // Sort descending once; top-k, top-p and min-p are then prefixes.
  size_t n = cand_.size();
  if (p_.top_k > 0 && size_t(p_.top_k) < n) {
    std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), [](auto& a, auto& b) { return a.first > b.first; });
    n = size_t(p_.top_k);
  } else {
    std::sort(cand_.begin(), cand_.end(), [](auto& a, auto& b) { return a.first > b.first; });
  }
  const float mx = cand_[0].first;
  std::vector<double> prob(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += prob[i] = std::exp(double(cand_[i].first - mx) / p_.temperature);
  for (auto& p : prob) p /= sum;
  size_t keep = n;
  if (p_.min_p > 0)
    for (size_t i = 1; i < keep; ++i)
      if (prob[i] < p_.min_p * prob[0]) keep = i;
  if (p_.top_p < 1) {
    double c = 0;
    for (size_t i = 0; i < keep; ++i) {
      c += prob[i];
      if (c >= p_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += prob[i];
  double u = std::uniform_real_distribution<double>(0, total)(rng_);
  for (size_t i = 0; i < keep; ++i) {
    u -= prob[i];
    if (u <= 0) return cand_[i].second;
  }
  return cand_[keep - 1].second;
}

float Sampler::LogProb(std::span<const float> logits, int32_t id) {
  float mx = *std::max_element(logits.begin(), logits.end());
  double s = 0;
  for (float l : logits) s += std::exp(double(l - mx));
  return float(double(logits[size_t(id)] - mx) - std::log(s));
}

}  // namespace atp
