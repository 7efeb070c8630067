#include "kernels/attention.h"

#include <immintrin.h>

namespace atp {

namespace {

#if defined(__AVX512F__)
// 16 elements of row `r` at element offset i, widened to f32.
inline __m512 Load16(const void* base, DType t, int64_t off) {
  if (t == DType::kF32) return _mm512_loadu_ps(static_cast<const float*>(base) + off);
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + off));
  if (t == DType::kBF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}
#endif

inline float LoadScalar(const void* base, DType t, int64_t off) {
  if (t == DType::kF32) return static_cast<const float*>(base)[off];
  uint16_t h = static_cast<const uint16_t*>(base)[off];
  return t == DType::kBF16 ? Bf16ToF32(h) : F16ToF32(h);
}

}  // namespace

void AttnScores(const float* q, int dim, const KvRows& k, float scale, float* scores) {
  for (int64_t j = 0; j < k.count; ++j) {
    const int64_t row = j * k.stride;
    int i = 0;
    float s = 0;
#if defined(__AVX512F__)
    __m512 acc = _mm512_setzero_ps();
    for (; i + 16 <= dim; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), Load16(k.data, k.dtype, row + i), acc);
    s = _mm512_reduce_add_ps(acc);
#endif
    for (; i < dim; ++i) s += q[i] * LoadScalar(k.data, k.dtype, row + i);
    scores[j] = s * scale;
  }
}

void AttnAccumulate(const float* p, const KvRows& v, int dim, float* out) {
  int i = 0;
#if defined(__AVX512F__)
  // Column tiles of 16 held in registers across all rows: out is read and written once.
  for (; i + 64 <= dim; i += 64) {
    __m512 a0 = _mm512_loadu_ps(out + i), a1 = _mm512_loadu_ps(out + i + 16);
    __m512 a2 = _mm512_loadu_ps(out + i + 32), a3 = _mm512_loadu_ps(out + i + 48);
    for (int64_t j = 0; j < v.count; ++j) {
      __m512 pj = _mm512_set1_ps(p[j]);
      const int64_t row = j * v.stride + i;
      a0 = _mm512_fmadd_ps(pj, Load16(v.data, v.dtype, row), a0);
      a1 = _mm512_fmadd_ps(pj, Load16(v.data, v.dtype, row + 16), a1);
      a2 = _mm512_fmadd_ps(pj, Load16(v.data, v.dtype, row + 32), a2);
      a3 = _mm512_fmadd_ps(pj, Load16(v.data, v.dtype, row + 48), a3);
    }
    _mm512_storeu_ps(out + i, a0);
    _mm512_storeu_ps(out + i + 16, a1);
    _mm512_storeu_ps(out + i + 32, a2);
    _mm512_storeu_ps(out + i + 48, a3);
  }
  for (; i + 16 <= dim; i += 16) {
    __m512 a = _mm512_loadu_ps(out + i);
    for (int64_t j = 0; j < v.count; ++j)
      a = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), Load16(v.data, v.dtype, j * v.stride + i), a);
    _mm512_storeu_ps(out + i, a);
  }
#endif
  for (; i < dim; ++i) {
    float a = out[i];
    for (int64_t j = 0; j < v.count; ++j) a += p[j] * LoadScalar(v.data, v.dtype, j * v.stride + i);
    out[i] = a;
  }
}

}  // namespace atp
