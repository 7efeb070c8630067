// Kernels of the GPU's eviction policies (cuda/evict_policy.cpp; the rule is kv/evict_rule.h's, shared
// with the host): the votes H2O and SnapKV evict by, and the gather that applies a keep mask to rows.
// Launchers only; nothing here allocates device memory.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention.h"

namespace atp::cuda {

// votes (n_kv, n) = for each KV head h and row j < n, the sum over queries t in [from, T) and the query
// heads of h's group of softmax(q_t K^T / sqrt(head_dim)) at row j, where query t sees rows
// [0, base + t + 1) (the chunk's own rows up to it after the `base` rows kept before it).
// K (n, n_kv * head_dim) f32 rows; Q (T, n_heads * head_dim) f32; lse scratch (T - from, n_heads).
// Each sum is taken in one fixed order (no atomics): the same inputs give the same votes.
void AttentionVotes(const AttnShape& a, const float* K, int64_t n, const float* Q, int64_t T, int64_t from,
                    int64_t base, float* lse, float* votes, cudaStream_t s);

// Rows of every KV head gathered: row j of head h in dst = row idx[h * n + j] of head h in src, for
// j < n (idx device memory). src and dst share form, width and heads, exact or MX (not KIVI).
void GatherRows(const DeviceRows& src, const DeviceRows& dst, const int32_t* idx, int64_t n, cudaStream_t s);

}  // namespace atp::cuda
