// The attention loop every policy shares: for each new query and head, gather the segments of
// rows the policy says that query may see, score them all, take one softmax, sum the values.
// Policies differ only in the segments they hand out (FlashInfer's split of data from math).
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "kernels/attention.h"
#include "kv/kv_policy.h"

namespace atp {

// Keys and values a query sees, paired row for row; optional per-row additive logit bias.
struct KvSegment {
  KvRows k, v;
  const float* logit_bias = nullptr;  // k.count entries or null
};

// Fills `out` with the segments that the query at row t (position positions[t]) sees for KV head kvh.
using SegmentFn = std::function<void(int64_t t, int kvh, std::vector<KvSegment>* out)>;

// O (T, q_dim) = softmax(Q K^T / sqrt(head_dim)) V over the segments, threaded over (token, KV head).
void AttendSegments(const KvShape& shape, int64_t T, const float* Q, float* O, const SegmentFn& segments);

}  // namespace atp
