#include "kernels/attention.h"

#include <immintrin.h>

#include <algorithm>

namespace atp {

namespace {

inline float LoadScalar(const void* base, DType t, int64_t off) {
  if (t == DType::kF32) return static_cast<const float*>(base)[off];
  uint16_t h = static_cast<const uint16_t*>(base)[off];
  return t == DType::kBF16 ? Bf16ToF32(h) : F16ToF32(h);
}

#if defined(__AVX512F__)
// 16 elements at element offset `off` of rows stored as T, widened to f32 (T fixed at compile time).
template <DType T>
inline __m512 Load16(const void* base, int64_t off) {
  if constexpr (T == DType::kF32) {
    return _mm512_loadu_ps(static_cast<const float*>(base) + off);
  } else {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + off));
    if constexpr (T == DType::kBF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    else return _mm512_cvtph_ps(h);
  }
}

inline __m256 Fold(__m512 v) {  // 16 lanes -> 8 partial sums
  return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
// The horizontal sums of four vectors at once, as [sum(a), sum(b), sum(c), sum(d)].
inline __m128 Sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  __m256 ab = _mm256_hadd_ps(Fold(a), Fold(b));
  __m256 cd = _mm256_hadd_ps(Fold(c), Fold(d));
  __m256 abcd = _mm256_hadd_ps(ab, cd);
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// Four keys per step: the query vector is loaded once per 16 columns and the four dot products
// share one horizontal reduction.
template <DType T>
void ScoresAvx512(const float* q, int dim, const KvRows& k, float scale, float* scores) {
  const int dv = dim & ~15;
  int64_t j = 0;
  for (; j + 4 <= k.count; j += 4) {
    const int64_t r0 = j * k.stride, r1 = r0 + k.stride, r2 = r1 + k.stride, r3 = r2 + k.stride;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < dv; i += 16) {
      const __m512 qv = _mm512_loadu_ps(q + i);
      a0 = _mm512_fmadd_ps(qv, Load16<T>(k.data, r0 + i), a0);
      a1 = _mm512_fmadd_ps(qv, Load16<T>(k.data, r1 + i), a1);
      a2 = _mm512_fmadd_ps(qv, Load16<T>(k.data, r2 + i), a2);
      a3 = _mm512_fmadd_ps(qv, Load16<T>(k.data, r3 + i), a3);
    }
    float s[4];
    _mm_storeu_ps(s, Sum4(a0, a1, a2, a3));
    for (int r = 0; r < 4; ++r) {
      for (int i = dv; i < dim; ++i) s[r] += q[i] * LoadScalar(k.data, T, r0 + r * k.stride + i);
      scores[j + r] = s[r] * scale;
    }
  }
  for (; j < k.count; ++j) {
    const int64_t row = j * k.stride;
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < dv; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), Load16<T>(k.data, row + i), acc);
    float s = _mm512_reduce_add_ps(acc);
    for (int i = dv; i < dim; ++i) s += q[i] * LoadScalar(k.data, T, row + i);
    scores[j] = s * scale;
  }
}

// Column tiles held in registers across all rows (out is read and written once per tile); two rows
// per step into separate accumulators so consecutive FMAs do not wait on each other.
template <DType T>
int AccumulateAvx512(const float* p, const KvRows& v, int dim, float* out) {
  int i = 0;
  for (; i + 64 <= dim; i += 64) {
    __m512 a[4], b[4];
    for (int c = 0; c < 4; ++c) a[c] = _mm512_loadu_ps(out + i + 16 * c), b[c] = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 2 <= v.count; j += 2) {
      const __m512 p0 = _mm512_set1_ps(p[j]), p1 = _mm512_set1_ps(p[j + 1]);
      const int64_t r0 = j * v.stride + i, r1 = r0 + v.stride;
      for (int c = 0; c < 4; ++c) {
        a[c] = _mm512_fmadd_ps(p0, Load16<T>(v.data, r0 + 16 * c), a[c]);
        b[c] = _mm512_fmadd_ps(p1, Load16<T>(v.data, r1 + 16 * c), b[c]);
      }
    }
    if (j < v.count) {
      const __m512 p0 = _mm512_set1_ps(p[j]);
      for (int c = 0; c < 4; ++c) a[c] = _mm512_fmadd_ps(p0, Load16<T>(v.data, j * v.stride + i + 16 * c), a[c]);
    }
    for (int c = 0; c < 4; ++c) _mm512_storeu_ps(out + i + 16 * c, _mm512_add_ps(a[c], b[c]));
  }
  for (; i + 16 <= dim; i += 16) {
    __m512 a = _mm512_loadu_ps(out + i);
    for (int64_t j = 0; j < v.count; ++j) a = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), Load16<T>(v.data, j * v.stride + i), a);
    _mm512_storeu_ps(out + i, a);
  }
  return i;  // columns done
}
#endif

}  // namespace

void AttnScores(const float* q, int dim, const KvRows& k, float scale, float* scores) {
#if defined(__AVX512F__)
  switch (k.dtype) {
    case DType::kF32: return ScoresAvx512<DType::kF32>(q, dim, k, scale, scores);
    case DType::kBF16: return ScoresAvx512<DType::kBF16>(q, dim, k, scale, scores);
    case DType::kF16: return ScoresAvx512<DType::kF16>(q, dim, k, scale, scores);
  }
#endif
  for (int64_t j = 0; j < k.count; ++j) {
    const int64_t row = j * k.stride;
    float s = 0;
    for (int i = 0; i < dim; ++i) s += q[i] * LoadScalar(k.data, k.dtype, row + i);
    scores[j] = s * scale;
  }
}

void AttnAccumulate(const float* p, const KvRows& v, int dim, float* out) {
  int i = 0;
#if defined(__AVX512F__)
  switch (v.dtype) {
    case DType::kF32: i = AccumulateAvx512<DType::kF32>(p, v, dim, out); break;
    case DType::kBF16: i = AccumulateAvx512<DType::kBF16>(p, v, dim, out); break;
    case DType::kF16: i = AccumulateAvx512<DType::kF16>(p, v, dim, out); break;
  }
#endif
  for (; i < dim; ++i) {
    float a = out[i];
    for (int64_t j = 0; j < v.count; ++j) a += p[j] * LoadScalar(v.data, v.dtype, j * v.stride + i);
    out[i] = a;
  }
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

void AttnAccumulateGroup(const float* p, int64_t ld, int nq, const KvRows& v, int dim, float* out) {
  for (int64_t j0 = 0; j0 < v.count; j0 += kGroupBlock) {
    const KvRows b = Block(v, j0);
    for (int g = 0; g < nq; ++g) AttnAccumulate(p + g * ld + j0, b, dim, out + int64_t(g) * dim);
  }
}

}  // namespace atp
