#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "kernels/simd.h"

namespace atp {

namespace {

inline float LoadScalar(const void* base, DType t, int64_t off) {
  if (t == DType::kF32) return static_cast<const float*>(base)[off];
  uint16_t h = static_cast<const uint16_t*>(base)[off];
  return t == DType::kBF16 ? Bf16ToF32(h) : F16ToF32(h);
}

#if defined(ATP_SIMD_WIDTH)
// Four keys per step: the query vector is loaded once per kLanes columns and the four dot products
// share one horizontal reduction. A key's score is the same bit for bit whether it came in a group of
// four or alone (Sum4 reduces each vector in the same order; the tail columns are explicit fused
// multiply-adds), so scores do not depend on how a query's keys were split into calls.
template <DType T>
void ScoresSimd(const float* q, int dim, const KvRows& k, float scale, float* scores) {
  using namespace simd;
  const int dv = dim & ~(kLanes - 1);
  int64_t j = 0;
  for (; j + 4 <= k.count; j += 4) {
    const int64_t r0 = j * k.stride, r1 = r0 + k.stride, r2 = r1 + k.stride, r3 = r2 + k.stride;
    Vec a0 = Zero(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < dv; i += kLanes) {
      const Vec qv = Load(q + i);
      a0 = Fma(qv, LoadAs<T>(k.data, r0 + i), a0);
      a1 = Fma(qv, LoadAs<T>(k.data, r1 + i), a1);
      a2 = Fma(qv, LoadAs<T>(k.data, r2 + i), a2);
      a3 = Fma(qv, LoadAs<T>(k.data, r3 + i), a3);
    }
    float s[4];
    _mm_storeu_ps(s, Sum4(a0, a1, a2, a3));
    for (int r = 0; r < 4; ++r) {
      for (int i = dv; i < dim; ++i) s[r] = std::fma(q[i], LoadScalar(k.data, T, r0 + r * k.stride + i), s[r]);
      scores[j + r] = s[r] * scale;
    }
  }
  for (; j < k.count; ++j) {
    const int64_t row = j * k.stride;
    Vec acc = Zero();
    for (int i = 0; i < dv; i += kLanes) acc = Fma(Load(q + i), LoadAs<T>(k.data, row + i), acc);
    float s = _mm_cvtss_f32(Sum4(acc, Zero(), Zero(), Zero()));
    for (int i = dv; i < dim; ++i) s = std::fma(q[i], LoadScalar(k.data, T, row + i), s);
    scores[j] = s * scale;
  }
}

// Column tiles of 4 vectors held in registers across all rows (the chains are read and written once
// per tile); two rows per step into the two chains, so that consecutive FMAs do not wait on each other.
// 8 accumulators: half the register file with AVX2, a quarter with AVX-512. Row 0 goes to `first`.
// Columns beyond the last tile: one vector at a time, one chain, into `out`.
template <DType T>
int AccumulateSimd(const float* p, const KvRows& v, int dim, float* first, float* second, float* out) {
  using namespace simd;
  constexpr int kTile = 4 * kLanes;
  int i = 0;
  for (; i + kTile <= dim; i += kTile) {
    Vec a[4], b[4];
    for (int c = 0; c < 4; ++c) a[c] = Load(first + i + kLanes * c), b[c] = Load(second + i + kLanes * c);
    int64_t j = 0;
    for (; j + 2 <= v.count; j += 2) {
      const Vec p0 = Set1(p[j]), p1 = Set1(p[j + 1]);
      const int64_t r0 = j * v.stride + i, r1 = r0 + v.stride;
      for (int c = 0; c < 4; ++c) {
        a[c] = Fma(p0, LoadAs<T>(v.data, r0 + kLanes * c), a[c]);
        b[c] = Fma(p1, LoadAs<T>(v.data, r1 + kLanes * c), b[c]);
      }
    }
    if (j < v.count) {
      const Vec p0 = Set1(p[j]);
      for (int c = 0; c < 4; ++c) a[c] = Fma(p0, LoadAs<T>(v.data, j * v.stride + i + kLanes * c), a[c]);
    }
    for (int c = 0; c < 4; ++c) Store(first + i + kLanes * c, a[c]), Store(second + i + kLanes * c, b[c]);
  }
  for (; i + kLanes <= dim; i += kLanes) {
    Vec a = Load(out + i);
    for (int64_t j = 0; j < v.count; ++j) a = Fma(Set1(p[j]), LoadAs<T>(v.data, j * v.stride + i), a);
    Store(out + i, a);
  }
  return i;  // columns done
}
#endif

}  // namespace

void AttnScores(const float* q, int dim, const KvRows& k, float scale, float* scores) {
#if defined(ATP_SIMD_WIDTH)
  switch (k.dtype) {
    case DType::kF32: return ScoresSimd<DType::kF32>(q, dim, k, scale, scores);
    case DType::kBF16: return ScoresSimd<DType::kBF16>(q, dim, k, scale, scores);
    case DType::kF16: return ScoresSimd<DType::kF16>(q, dim, k, scale, scores);
    default: std::abort();  // a bug: KV rows are element dtypes (kv/policy_spec.cpp refuses blocks)
  }
#endif
  for (int64_t j = 0; j < k.count; ++j) {
    const int64_t row = j * k.stride;
    float s = 0;
    for (int i = 0; i < dim; ++i) s += q[i] * LoadScalar(k.data, k.dtype, row + i);
    scores[j] = s * scale;
  }
}

namespace {
// One query head's share of AttnAccumulateGroup: rows j of v with parity + j even into out, odd into
// odd, in the column tiles; the remaining columns (fewer than a tile) in one chain into out, with
// explicit fused multiply-adds: left to the compiler, contraction may differ between a loop's main
// body and its remainder, and the sum would depend on how many rows a call gets.
void AccumulateRows(const float* p, const KvRows& v, int dim, float* out, float* odd, int64_t parity) {
  int i = 0;
#if defined(ATP_SIMD_WIDTH)
  float* first = parity % 2 ? odd : out;
  float* second = parity % 2 ? out : odd;
  switch (v.dtype) {
    case DType::kF32: i = AccumulateSimd<DType::kF32>(p, v, dim, first, second, out); break;
    case DType::kBF16: i = AccumulateSimd<DType::kBF16>(p, v, dim, first, second, out); break;
    case DType::kF16: i = AccumulateSimd<DType::kF16>(p, v, dim, first, second, out); break;
    default: std::abort();  // a bug, as in AttnScores
  }
#endif
  for (; i < dim; ++i) {
    float a = out[i];
    for (int64_t j = 0; j < v.count; ++j) a = std::fma(p[j], LoadScalar(v.data, v.dtype, j * v.stride + i), a);
    out[i] = a;
  }
}
}  // namespace

void AttnAccumulate(const float* p, const KvRows& v, int dim, float* out) {
  std::vector<float> odd(size_t(dim), 0.f);
  AttnAccumulateGroup(p, 0, 1, v, dim, out, odd.data(), 0);
  for (int i = 0; i < dim; ++i) out[i] += odd[size_t(i)];
}

namespace {
// Rows kept in L1 while every query of a group visits them (32 rows of 64 f32 = 8 KiB).
constexpr int64_t kGroupBlock = 32;
KvRows Block(const KvRows& r, int64_t j0) {
  KvRows b = r;
  b.data = static_cast<const uint8_t*>(r.data) + size_t(j0 * r.stride) * DTypeSize(r.dtype);
  b.count = std::min(kGroupBlock, r.count - j0);
  return b;
}
}  // namespace

void AttnScoresGroup(const float* q, int nq, int dim, const KvRows& k, float scale, float* scores, int64_t ld) {
  for (int64_t j0 = 0; j0 < k.count; j0 += kGroupBlock) {
    const KvRows b = Block(k, j0);
    for (int g = 0; g < nq; ++g) AttnScores(q + int64_t(g) * dim, dim, b, scale, scores + g * ld + j0);
  }
}

void AttnAccumulateGroup(const float* p, int64_t ld, int nq, const KvRows& v, int dim, float* out, float* odd,
                         int64_t first) {
  for (int64_t j0 = 0; j0 < v.count; j0 += kGroupBlock) {
    const KvRows b = Block(v, j0);
    for (int g = 0; g < nq; ++g)
      AccumulateRows(p + g * ld + j0, b, dim, out + int64_t(g) * dim, odd + int64_t(g) * dim, first + j0);
  }
}

}  // namespace atp
