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

}  // namespace atp
