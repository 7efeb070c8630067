// The rules of sampling/rules.h the slow and obvious way, for the host's and the GPU's token-choice
// tests: sort every token by rank, cut the prefixes, draw by inverse CDF in id order. It also says how
// near the choice was to changing: the smallest distance of a decision to its threshold, relative
// (min-p against min_p, the top-p running sums against top_p Z, the draw's running sums against its
// target), which is where another order of summation or another expf may decide otherwise.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "sampling/params.h"
#include "sampling/rules.h"

namespace atp::testing {

struct ReferenceChoice {
  int32_t id = -1;  // -1: rounding left the draw above the total (the rules then take the last kept token)
  double margin = std::numeric_limits<double>::infinity();
};

inline ReferenceChoice ChooseByReference(const std::vector<float>& raw, const SamplingParams& p,
                                         const std::vector<int32_t>& hist, uint64_t draw) {
  const int32_t V = int32_t(raw.size());
  std::vector<float> l = raw;
  std::set<int32_t> seen(hist.begin(), hist.end());
  if (p.repetition_penalty != 1)
    for (int32_t t : seen) l[size_t(t)] = l[size_t(t)] > 0 ? l[size_t(t)] / p.repetition_penalty : l[size_t(t)] * p.repetition_penalty;
  std::vector<int32_t> order(static_cast<size_t>(V));
  for (int32_t i = 0; i < V; ++i) order[size_t(i)] = i;
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return l[size_t(a)] > l[size_t(b)] || (l[size_t(a)] == l[size_t(b)] && a < b);
  });
  ReferenceChoice out;
  if (p.temperature == 0) {
    out.id = order[0];
    return out;
  }
  const float mx = l[size_t(order[0])];
  std::vector<double> w(static_cast<size_t>(V));
  for (int32_t i = 0; i < V; ++i) w[size_t(i)] = sampling::Weight(l[size_t(i)], mx, 1.0f / p.temperature);
  size_t keep = p.top_k > 0 ? std::min(size_t(p.top_k), size_t(V)) : size_t(V);
  double z = 0;
  for (size_t i = 0; i < keep; ++i) z += w[size_t(order[i])];
  if (p.min_p > 0)
    for (size_t i = 0; i < keep; ++i) out.margin = std::min(out.margin, std::fabs(w[size_t(order[i])] - p.min_p) / p.min_p);
  for (size_t i = 0; i < keep; ++i)
    if (w[size_t(order[i])] < p.min_p) keep = i;
  if (p.top_p < 1) {
    double c = 0;
    const double target = double(p.top_p) * z;
    for (size_t i = 0; i < keep; ++i) {
      c += w[size_t(order[i])];
      out.margin = std::min(out.margin, std::fabs(c - target) / z);
      if (c >= target) {
        keep = i + 1;
        break;
      }
    }
  }
  std::vector<int32_t> kept(order.begin(), order.begin() + long(keep));
  std::sort(kept.begin(), kept.end());
  double total = 0;
  for (int32_t id : kept) total += w[size_t(id)];
  const double u = sampling::Uniform(p.seed, draw) * total;
  double c = 0;
  for (int32_t id : kept) {
    if (!(w[size_t(id)] > 0)) continue;
    c += w[size_t(id)];
    out.margin = std::min(out.margin, std::fabs(c - u) / total);
    if (c >= u && out.id < 0) out.id = id;
  }
  return out;
}

}  // namespace atp::testing
