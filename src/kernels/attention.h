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
// out[0..dim) += sum_j p[j] * v_j.
void AttnAccumulate(const float* p, const KvRows& v, int dim, float* out);

// The same for the `nq` query heads of a grouped-query group at once, which share k and v: each
// block of rows is read from memory once for all of them (per-head calls read every row nq times).
// q: (nq, dim) f32; scores[g * ld + j] = scale * dot(q_g, k_j); p likewise (nq rows, stride ld);
// out: (nq, dim), out_g += sum_j p[g * ld + j] * v_j. Scores equal the per-head calls bit for bit;
// sums differ from them only in f32 summation order.
void AttnScoresGroup(const float* q, int nq, int dim, const KvRows& k, float scale, float* scores, int64_t ld);
void AttnAccumulateGroup(const float* p, int64_t ld, int nq, const KvRows& v, int dim, float* out);

}  // namespace atp
