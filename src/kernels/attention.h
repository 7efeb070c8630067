// Attention building blocks over key/value rows in any stored form, one query head at a time.
// Policies decide what rows exist (exact, principal, reconstructed); these kernels only read them
// through KvRows, so every policy shares one scoring and one weighted-sum implementation.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace atp {

// `count` rows of `dim` elements for one KV head: row j starts at data + j * stride elements.
struct KvRows {
  DType dtype = DType::kF32;
  const void* data = nullptr;
  int64_t stride = 0;
  int64_t count = 0;
};

// scores[j] = scale * dot(q, k_j) for j in [0, k.count); q has `dim` f32 elements.
void AttnScores(const float* q, int dim, const KvRows& k, float scale, float* scores);
// out[0..dim) += sum_j p[j] * v_j (AttnAccumulateGroup's sum for one head, completed).
void AttnAccumulate(const float* p, const KvRows& v, int dim, float* out);

// The same for the `nq` query heads of a grouped-query group at once, which share k and v: each
// block of rows is read from memory once for all of them (per-head calls read every row nq times).
// q: (nq, dim) f32; scores[g * ld + j] = scale * dot(q_g, k_j); p likewise (nq rows, stride ld);
// Scores equal the per-head calls bit for bit.
// The weighted sum goes into two chains: out_g + odd_g (each (nq, dim)) += sum_j p[g * ld + j] * v_j,
// where the rows of the query's whole list (this call's row j is row first + j of it) alternate
// between the chains, and the caller adds odd into out once every row is in (odd starting at zero).
// Two chains let consecutive FMAs overlap; keeping them apart until the end makes the sum depend only
// on the order of the rows, not on how they were split into calls (pages, segments): a query's output
// is then the same bit for bit whether its rows came in one run or many.
void AttnScoresGroup(const float* q, int nq, int dim, const KvRows& k, float scale, float* scores, int64_t ld);
void AttnAccumulateGroup(const float* p, int64_t ld, int nq, const KvRows& v, int dim, float* out, float* odd,
                         int64_t first);

}  // namespace atp
