#include "kernels/q8_dot.h"

#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>

#include "core/kquant.h"

namespace atp {

void QuantizeRowQ8A(const float* x, int64_t in, BlockQ8A* dst) {
  if (in % 32 != 0) std::abort();  // callers pass whole weight blocks' worth of columns
  for (int64_t b = 0; b < in / 32; ++b) {
    const float* xb = x + b * 32;
    BlockQ8A& o = dst[b];
    float amax = 0;
    bool finite = true;
    for (int j = 0; j < 32; ++j) {
      finite = finite && std::abs(xb[j]) <= FLT_MAX;
      amax = std::max(amax, std::abs(xb[j]));
    }
    o.d = finite ? amax / 127 : NAN;
    const float id = finite && amax > 0 ? 127 / amax : 0;
    int sum[2] = {0, 0};
    for (int j = 0; j < 32; ++j) {
      const int q = int(std::lrint(xb[j] * id));
      o.q[j] = int8_t(q);
      sum[j / 16] += q;
    }
    o.sum = o.d * float(sum[0] + sum[1]);
    o.s[0] = o.d * float(sum[0]);
    o.s[1] = o.d * float(sum[1]);
  }
}

bool HasQ8Dot(DType t) {
  switch (t) {
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K: return true;
    default: return false;
  }
}

namespace {

float Half(const uint8_t* p) { return F16ToF32(uint16_t(p[0] | p[1] << 8)); }

// Element j of a chunk in halves of 16: the same integer scale (and min) for both halves.
void Uniform(Q8Chunk* c, int32_t scale, int32_t min) {
  c->scale[0] = c->scale[1] = scale;
  c->min[0] = c->min[1] = min;
}

}  // namespace

// Each case reads the layout as core/quant.h and core/kquant.h describe it (element by element; the
// AVX2 kernels below read the same bytes 32 at a time).
void DecodeQ8Terms(DType t, const uint8_t* p, Q8Terms* o) {
  o->b = 0;
  o->chunks = DTypeBlockElems(t) / 32;
  switch (t) {
    case DType::kQ8_0:
    case DType::kQ4_0: {
      o->a = Half(p);
      Q8Chunk& c = o->c[0];
      Uniform(&c, 1, 0);
      for (int j = 0; j < 32; ++j)
        c.v[j] = t == DType::kQ8_0 ? int8_t(p[2 + j]) : int8_t(((p[2 + j % 16] >> (4 * (j / 16))) & 0xf) - 8);
      return;
    }
    case DType::kQ4_K:
    case DType::kQ5_K: {
      o->a = Half(p);
      o->b = Half(p + 2);
      const uint8_t* qs = p + (t == DType::kQ4_K ? 16 : 48);
      for (int k = 0; k < 8; ++k) {  // sub-block k: elements 32 k + l, nibble k % 2 of qs[32 (k / 2) + l]
        Q8Chunk& c = o->c[k];
        int sc, m;
        ScaleMinK4(p + 4, k, &sc, &m);
        Uniform(&c, sc, m);
        for (int l = 0; l < 32; ++l) {
          int q = (qs[32 * (k / 2) + l] >> (4 * (k % 2))) & 0xf;
          if (t == DType::kQ5_K) q |= ((p[16 + l] >> k) & 1) << 4;  // bit k of qh[l]
          c.v[l] = int8_t(q);
        }
      }
      return;
    }
    case DType::kQ6_K: {
      o->a = Half(p + 208);
      const auto* sc = reinterpret_cast<const int8_t*>(p + 192);
      for (int h = 0; h < 2; ++h)
        for (int k = 0; k < 4; ++k) {  // elements 128 h + 32 k + l: chunk 4 h + k, sub-blocks 8 h + 2 k (+1)
          Q8Chunk& c = o->c[4 * h + k];
          for (int i = 0; i < 2; ++i) {
            c.scale[i] = sc[8 * h + 2 * k + i];
            c.min[i] = 0;
          }
          for (int l = 0; l < 32; ++l) {
            const int lo = (p[64 * h + l + 32 * (k % 2)] >> (k < 2 ? 0 : 4)) & 0xf;
            const int hi = (p[128 + 32 * h + l] >> (2 * k)) & 3;
            c.v[l] = int8_t((lo | hi << 4) - 32);
          }
        }
      return;
    }
    default: std::abort();  // HasQ8Dot(t) is the caller's contract
  }
}

void DotRowQ8Ref(DType t, const uint8_t* w, int64_t in, const BlockQ8A* x, int rows, float* y, int64_t out) {
  const int64_t elems = DTypeBlockElems(t), nb = in / elems, xs = in / 32;
  const size_t bytes = DTypeBytes(t, elems);
  Q8Terms terms;
  float acc[8] = {};
  for (int64_t b = 0; b < nb; ++b) {
    DecodeQ8Terms(t, w + size_t(b) * bytes, &terms);
    for (int r = 0; r < rows; ++r) {
      float sb = 0, mb = 0;  // sum over chunks of d * integer dot, and of the min terms
      for (int k = 0; k < terms.chunks; ++k) {
        const Q8Chunk& c = terms.c[k];
        const BlockQ8A& xb = x[r * xs + b * terms.chunks + k];
        int64_t dot = 0;
        for (int h = 0; h < 2; ++h) {
          int64_t half = 0;
          for (int j = 16 * h; j < 16 * h + 16; ++j) half += int64_t(c.v[j]) * xb.q[j];
          dot += c.scale[h] * half;
        }
        sb += float(dot) * xb.d;
        mb += float(c.min[0]) * xb.s[0] + float(c.min[1]) * xb.s[1];
      }
      acc[r] += terms.a * sb - terms.b * mb;
    }
  }
  for (int r = 0; r < rows; ++r) y[r * out] = acc[r];
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
namespace {

// The AVX2 kernels: per chunk, 8 int32 lanes of partial integer dots (exact: maddubs pairs stay below
// 2^15 for codes |v| <= 128 against |q| <= 127, and every lane below 2^24, so its conversion to f32
// is exact too), scaled by the activation block's d into f32 accumulators.

inline float HalfInline(const uint8_t* p) { return _cvtsh_ss(uint16_t(p[0] | p[1] << 8)); }  // no call: keeps the accumulators in registers
inline __m256i LoadQ(const BlockQ8A& b) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.q)); }
inline __m256i Load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
// Signed codes v times activation codes q, as 16 int16 pair sums: maddubs takes unsigned x signed,
// so |v| goes unsigned and v's sign moves onto q.
inline __m256i MulSigned(__m256i v, __m256i q) { return _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(q, v)); }
// 16 nibbles of 16 bytes -> 32 bytes: element j < 16 the low nibble of byte j, j + 16 its high nibble.
inline __m256i Nibbles(const uint8_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i m = _mm_set1_epi8(0xf);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

// Q8_0 / Q4_0: one chunk per block, two accumulation chains per row at one row.
template <int R, DType T>
void Dot32(const uint8_t* w, int64_t in, const BlockQ8A* x, float* y, int64_t out) {
  constexpr int K = R == 1 ? 2 : 1;
  constexpr size_t kBytes = T == DType::kQ8_0 ? 34 : 18;
  const int64_t nb = in / 32;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[R][K];
  for (int r = 0; r < R; ++r)
    for (int k = 0; k < K; ++k) acc[r][k] = _mm256_setzero_ps();
  auto block = [&](int64_t b, int k) {
    const uint8_t* p = w + size_t(b) * kBytes;
    const float d = HalfInline(p);
    const __m256i v = T == DType::kQ8_0 ? Load32(p + 2) : _mm256_sub_epi8(Nibbles(p + 2), _mm256_set1_epi8(8));
    for (int r = 0; r < R; ++r) {
      const BlockQ8A& xb = x[r * nb + b];
      const __m256i s = _mm256_madd_epi16(MulSigned(v, LoadQ(xb)), ones);
      acc[r][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * xb.d), acc[r][k]);
    }
  };
  int64_t b = 0;
  for (; b + K <= nb; b += K)
    for (int k = 0; k < K; ++k) block(b + k, k);
  for (; b < nb; ++b) block(b, 0);
  for (int r = 0; r < R; ++r) {
    for (int k = 1; k < K; ++k) acc[r][0] = _mm256_add_ps(acc[r][0], acc[r][k]);
    y[r * out] = Sum8(acc[r][0]);
  }
}

// Q4_K / Q5_K / Q6_K super-blocks: per chunk the integer dot (times the sub-block scale, as int16
// multipliers in madd) scaled by the activation d into a per-block accumulator, which is scaled by
// the block's d once; Q4_K/Q5_K's mins go to a scalar per row (min * d_x * sum q per chunk), Q6_K's
// offset 32 is subtracted in the integers (maddubs of 32 with q).
template <int R, DType T>
void DotK(const uint8_t* w, int64_t in, const BlockQ8A* x, float* y, int64_t out) {
  constexpr int K = R == 1 ? 2 : 1;
  constexpr size_t kBytes = T == DType::kQ4_K ? 144 : T == DType::kQ5_K ? 176 : 210;
  const int64_t nb = in / kSuperBlock, xs = in / 32;
  const __m256i low = _mm256_set1_epi8(0xf);
  __m256 acc[R];
  float mins[R][K];
  for (int r = 0; r < R; ++r) {
    acc[r] = _mm256_setzero_ps();
    for (int k = 0; k < K; ++k) mins[r][k] = 0;
  }
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* p = w + size_t(b) * kBytes;
    const BlockQ8A* xb = x + b * 8;
    __m256 sb[R][K];
    for (int r = 0; r < R; ++r)
      for (int k = 0; k < K; ++k) sb[r][k] = _mm256_setzero_ps();
    // Chunk k's codes u (as unsigned bytes) and the int16 multipliers of its 16 pair sums.
    auto use = [&](int k, __m256i u, __m256i scale, float m) {
      for (int r = 0; r < R; ++r) {
        const BlockQ8A& a = xb[r * xs + k];
        const __m256i q = LoadQ(a);
        __m256i p16 = _mm256_maddubs_epi16(u, q);
        if constexpr (T == DType::kQ6_K) p16 = _mm256_sub_epi16(p16, _mm256_maddubs_epi16(_mm256_set1_epi8(32), q));
        const __m256 s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, scale));
        sb[r][k % K] = _mm256_fmadd_ps(s, _mm256_set1_ps(a.d), sb[r][k % K]);
        if constexpr (T != DType::kQ6_K) mins[r][k % K] += m * a.sum;
      }
    };
    float d;
    if constexpr (T == DType::kQ6_K) {
      d = HalfInline(p + 208);
      const auto* sc = reinterpret_cast<const int8_t*>(p + 192);
      for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = Load32(p + 64 * h), ql1 = Load32(p + 64 * h + 32), qh = Load32(p + 128 + 32 * h);
        for (int k = 0; k < 4; ++k) {
          const __m256i ql = k % 2 ? ql1 : ql0;
          const __m256i lo = _mm256_and_si256(k < 2 ? ql : _mm256_srli_epi16(ql, 4), low);
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), _mm256_set1_epi8(3));
          const int s = 8 * h + 2 * k;
          const __m256i scale = _mm256_set_m128i(_mm_set1_epi16(sc[s + 1]), _mm_set1_epi16(sc[s]));
          use(4 * h + k, _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), scale, 0);
        }
      }
    } else {
      d = HalfInline(p);
      const float dmin = HalfInline(p + 2);
      const uint8_t* qs = p + (T == DType::kQ4_K ? 16 : 48);
      __m256i qh;
      if constexpr (T == DType::kQ5_K) qh = Load32(p + 16);
      for (int c = 0; c < 4; ++c) {
        const __m256i v = Load32(qs + 32 * c);
        for (int i = 0; i < 2; ++i) {
          const int k = 2 * c + i;
          __m256i u = _mm256_and_si256(i ? _mm256_srli_epi16(v, 4) : v, low);
          if constexpr (T == DType::kQ5_K)
            u = _mm256_or_si256(u, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, k), _mm256_set1_epi8(1)), 4));
          int sc, m;
          ScaleMinK4(p + 4, k, &sc, &m);
          use(k, u, _mm256_set1_epi16(int16_t(sc)), dmin * float(m));
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int k = 1; k < K; ++k) sb[r][0] = _mm256_add_ps(sb[r][0], sb[r][k]);
      acc[r] = _mm256_fmadd_ps(sb[r][0], _mm256_set1_ps(d), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float m = 0;
    for (int k = 0; k < K; ++k) m += mins[r][k];
    y[r * out] = Sum8(acc[r]) - m;
  }
}

template <int R>
void DotRows(DType t, const uint8_t* w, int64_t in, const BlockQ8A* x, float* y, int64_t out) {
  switch (t) {
    case DType::kQ8_0: return Dot32<R, DType::kQ8_0>(w, in, x, y, out);
    case DType::kQ4_0: return Dot32<R, DType::kQ4_0>(w, in, x, y, out);
    case DType::kQ4_K: return DotK<R, DType::kQ4_K>(w, in, x, y, out);
    case DType::kQ5_K: return DotK<R, DType::kQ5_K>(w, in, x, y, out);
    case DType::kQ6_K: return DotK<R, DType::kQ6_K>(w, in, x, y, out);
    default: std::abort();  // HasQ8Dot(t) is the caller's contract
  }
}

}  // namespace

void DotRowQ8(DType t, const uint8_t* w, int64_t in, const BlockQ8A* x, int rows, float* y, int64_t out) {
  switch (rows) {
    case 1: return DotRows<1>(t, w, in, x, y, out);
    case 2: return DotRows<2>(t, w, in, x, y, out);
    case 3: return DotRows<3>(t, w, in, x, y, out);
    case 4: return DotRows<4>(t, w, in, x, y, out);
    case 5: return DotRows<5>(t, w, in, x, y, out);
    case 6: return DotRows<6>(t, w, in, x, y, out);
    case 7: return DotRows<7>(t, w, in, x, y, out);
    default: return DotRows<8>(t, w, in, x, y, out);
  }
}
#else
void DotRowQ8(DType t, const uint8_t* w, int64_t in, const BlockQ8A* x, int rows, float* y, int64_t out) {
  DotRowQ8Ref(t, w, in, x, rows, y, out);
}
#endif

}  // namespace atp
