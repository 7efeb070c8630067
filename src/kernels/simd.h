// The f32 vector of the widest instruction set a translation unit is compiled for, AVX-512 (16
// lanes) or AVX2+FMA+F16C (8 lanes), with the few operations the kernels share, so one kernel body
// serves both. ATP_SIMD_WIDTH is left undefined without either and kernels keep their scalar code.
// Not a general vector library: only what matmul, attention and ops need.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "core/dtype.h"

#if defined(__AVX512F__)
#define ATP_SIMD_WIDTH 16
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define ATP_SIMD_WIDTH 8
#endif

#if defined(ATP_SIMD_WIDTH)
namespace atp::simd {

constexpr int kLanes = ATP_SIMD_WIDTH;

#if ATP_SIMD_WIDTH == 16
using Vec = __m512;
inline Vec Zero() { return _mm512_setzero_ps(); }
inline Vec Set1(float x) { return _mm512_set1_ps(x); }
inline Vec Load(const float* p) { return _mm512_loadu_ps(p); }
inline void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec Add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec Sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
inline Vec Mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec Div(Vec a, Vec b) { return _mm512_div_ps(a, b); }
inline Vec Max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
inline Vec Min(Vec a, Vec b) { return _mm512_min_ps(a, b); }
inline Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }   // a * b + c
inline Vec Fnma(Vec a, Vec b, Vec c) { return _mm512_fnmadd_ps(a, b, c); } // c - a * b
inline float ReduceAdd(Vec v) { return _mm512_reduce_add_ps(v); }
inline float ReduceMax(Vec v) { return _mm512_reduce_max_ps(v); }
// 16 bf16 / f16 values widened to f32.
inline Vec LoadBf16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline Vec LoadF16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline Vec RoundNearest(Vec x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// x * 2^n for integral n in [-150, 128]; subnormal results round once.
inline Vec Scale2(Vec x, Vec n) { return _mm512_scalef_ps(x, n); }
// 16 lanes -> 8 partial sums.
inline __m256 Fold(Vec v) {
  return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
#else
using Vec = __m256;
inline Vec Zero() { return _mm256_setzero_ps(); }
inline Vec Set1(float x) { return _mm256_set1_ps(x); }
inline Vec Load(const float* p) { return _mm256_loadu_ps(p); }
inline void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec Add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec Sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
inline Vec Mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec Div(Vec a, Vec b) { return _mm256_div_ps(a, b); }
inline Vec Max(Vec a, Vec b) { return _mm256_max_ps(a, b); }
inline Vec Min(Vec a, Vec b) { return _mm256_min_ps(a, b); }
inline Vec Fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }   // a * b + c
inline Vec Fnma(Vec a, Vec b, Vec c) { return _mm256_fnmadd_ps(a, b, c); } // c - a * b
inline float ReduceAdd(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
inline float ReduceMax(Vec v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}
// 8 bf16 / f16 values widened to f32.
inline Vec LoadBf16(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline Vec LoadF16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline Vec RoundNearest(Vec x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// x * 2^n for integral n in [-150, 128]. AVX2 has no scalef: 2^n is built from exponent bits, which
// only reach normal powers, so it is applied as two halves, each within [-75, 64]. The first product
// is exact, so a subnormal result still rounds once, as with scalef.
inline Vec Scale2(Vec x, Vec n) {
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i h = _mm256_srai_epi32(ni, 1), k = _mm256_sub_epi32(ni, h);
  const __m256i bias = _mm256_set1_epi32(127);
  const Vec ph = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
  const Vec pk = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(x, ph), pk);
}
inline __m256 Fold(Vec v) { return v; }
#endif

// kLanes values of rows stored as T at element offset `off` of base, widened to f32.
template <DType T>
inline Vec LoadAs(const void* base, int64_t off) {
  if constexpr (T == DType::kF32) return Load(static_cast<const float*>(base) + off);
  else if constexpr (T == DType::kBF16) return LoadBf16(static_cast<const uint16_t*>(base) + off);
  else return LoadF16(static_cast<const uint16_t*>(base) + off);
}

// The horizontal sums of four vectors at once, as [sum(a), sum(b), sum(c), sum(d)]: one shared
// reduction instead of four.
inline __m128 Sum4(Vec a, Vec b, Vec c, Vec d) {
  const __m256 ab = _mm256_hadd_ps(Fold(a), Fold(b));
  const __m256 cd = _mm256_hadd_ps(Fold(c), Fold(d));
  const __m256 abcd = _mm256_hadd_ps(ab, cd);
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// exp(x) per lane: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact r), Cephes'
// degree-6 polynomial for exp(r), then scale by 2^n. Relative error ~2 ulp; inputs below -104
// give 0 (as exp does in f32), above 88.7 give +inf.
inline Vec Exp(Vec x) {
  x = Min(Max(x, Set1(-104.0f)), Set1(88.8f));
  const Vec n = RoundNearest(Mul(x, Set1(1.44269504088896341f)));
  Vec r = Fnma(n, Set1(0.693359375f), x);
  r = Fnma(n, Set1(-2.12194440e-4f), r);
  Vec p = Set1(1.9875691500e-4f);
  p = Fma(p, r, Set1(1.3981999507e-3f));
  p = Fma(p, r, Set1(8.3334519073e-3f));
  p = Fma(p, r, Set1(4.1665795894e-2f));
  p = Fma(p, r, Set1(1.6666665459e-1f));
  p = Fma(p, r, Set1(5.0000001201e-1f));
  p = Fma(p, Mul(r, r), Add(r, Set1(1.0f)));
  return Scale2(p, n);
}

}  // namespace atp::simd
#endif
