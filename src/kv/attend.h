// The attention loop every policy shares: for each new query and head, gather the segments of
// rows the policy says that query may see, score them all, take one softmax, sum the values.
// Policies differ only in the segments they hand out (FlashInfer's split of data from math).
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "kernels/attention.h"
#include "kernels/packed_attention.h"
#include "kv/kv_policy.h"

namespace atp {

// Keys and values a query sees, paired row for row. Rows may live in a reduced basis:
// with q_map (head_dim x k_dim) scores are (q q_map) . k_j; with out_map (v_dim x head_dim) the
// weighted sum of value rows is mapped back once, out += (sum_j a_j v_j) out_map.
struct KvSegment {
  KvRows k, v;
  const float* q_map = nullptr;   // null: k rows have head_dim elements
  int k_dim = 0;                  // with q_map
  const float* out_map = nullptr; // null: v rows have head_dim elements
  int v_dim = 0;                  // with out_map
  // Packed rows (kernels/packed_attention.h): when a layout is not kNone it replaces k or v, and
  // the kernels dequantize in registers. pk.dim / pv.dim play the role of k_dim / v_dim.
  PackedRows pk{}, pv{};
  // >= 0: this segment holds a second part of rows already counted, rows [adds_to, adds_to + count())
  // of the segments without adds_to, in their order: its scores add to theirs and its value rows sum
  // with their weights (a token kept as a sum of two forms, atp's principal part plus quantized residual,
  // is read without forming the sum). A part with no key rows (k.data null, pk not packed) adds to the
  // values only (keys formed some other way).
  int64_t adds_to = -1;
  bool has_keys() const { return k.data != nullptr || pk.layout != PackedLayout::kNone; }
  int64_t count() const { return pk.layout != PackedLayout::kNone ? pk.count : k.count; }
};

// Fills `out` with the segments that the query at row t (position positions[t]) sees for KV head kvh.
using SegmentFn = std::function<void(int64_t t, int kvh, std::vector<KvSegment>* out)>;

// Optional feedback of attention weights (H2O, SnapKV): for query row t and query head h, the
// softmax weights w[0..n) over the rows of that query's segments, in segment order. Called from
// pool workers; `thread` is the worker index in [0, ThreadPool::Global().size()), so a caller can
// keep one accumulator per worker without locks.
using WeightsFn = std::function<void(int64_t t, int h, const float* w, int64_t n, int thread)>;

// O (T, q_dim) = softmax(Q K^T / sqrt(head_dim)) V over the segments, threaded over (token, KV head).
void AttendSegments(const KvShape& shape, int64_t T, const float* Q, float* O, const SegmentFn& segments,
                    const WeightsFn& weights = nullptr);

}  // namespace atp
