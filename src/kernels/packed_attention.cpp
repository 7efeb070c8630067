#include "kernels/packed_attention.h"

#include <immintrin.h>

#include <array>

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/dtype.h"

namespace atp {

namespace {

// A small float format: sign, ebits exponent bits (bias), mbits mantissa bits; subnormals at e = 0.
float MiniFloat(uint32_t code, int ebits, int mbits, int bias) {
  const uint32_t m = code & ((1u << mbits) - 1), e = (code >> mbits) & ((1u << ebits) - 1);
  const bool neg = (code >> (ebits + mbits)) & 1;
  float v = e == 0 ? std::ldexp(float(m), 1 - bias - mbits) : std::ldexp(float(m + (1u << mbits)), int(e) - bias - mbits);
  return neg ? -v : v;
}

// Byte offset of the element stream within a row.
int64_t MxHeader(MxFormat f, int dim) {
  if (f == MxFormat::kNvFp4) return 4 + (dim + 15) / 16;
  return (dim + 31) / 32;
}

// Scale of the block holding element i of an MX / NVFP4 row (MX INT8's 2^-6 is applied by its element).
inline float MxBlockScale(MxFormat f, const uint8_t* row, int dim, int i) {
  if (f == MxFormat::kNvFp4) {
    float rs;
    std::memcpy(&rs, row, 4);
    return rs * E4M3Value(row[4 + i / 16]);
  }
  return E8M0Value(row[i / 32]);
}

inline float F16(uint16_t h) { return _cvtsh_ss(h); }

std::vector<float>& Scratch() {
  thread_local std::vector<float> s;
  return s;
}

#if defined(__AVX512F__)
// 16 codes of w bits, elements i .. i+15 of a stream (i a multiple of 16), as int32 lanes.
inline __m512i Codes16(const uint8_t* s, int64_t i, int w) {
  if (w == 8) return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
  if (w == 4) {
    uint64_t u;
    std::memcpy(&u, s + i / 2, 8);
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i sh = _mm512_set_epi32(28, 24, 20, 16, 12, 8, 4, 0, 28, 24, 20, 16, 12, 8, 4, 0);
    __m512i v = _mm512_permutexvar_epi32(idx, _mm512_castsi128_si512(_mm_cvtsi64_si128(int64_t(u))));
    return _mm512_and_si512(_mm512_srlv_epi32(v, sh), _mm512_set1_epi32(15));
  }
  if (w == 2) {
    uint32_t u;
    std::memcpy(&u, s + i / 4, 4);
    const __m512i sh = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    return _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(int(u)), sh), _mm512_set1_epi32(3));
  }
  // w == 6: 16 elements in 12 bytes; lane L needs bytes (6L)/8 and the next, shifted by (6L)%8.
#if defined(__AVX512VBMI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  const __m512i src = _mm512_castsi128_si512(_mm_maskz_loadu_epi8(0x0FFF, s + i * 6 / 8));
  alignas(64) static const uint8_t kIdx[64] = {0, 1, 0, 0, 0, 1, 0, 0, 1, 2, 0, 0, 2, 3, 0, 0,     //
                                               3, 4, 0, 0, 3, 4, 0, 0, 4, 5, 0, 0, 5, 6, 0, 0,     //
                                               6, 7, 0, 0, 6, 7, 0, 0, 7, 8, 0, 0, 8, 9, 0, 0,     //
                                               9, 10, 0, 0, 9, 10, 0, 0, 10, 11, 0, 0, 11, 12, 0, 0};
  const __m512i two = _mm512_maskz_permutexvar_epi8(0x3333333333333333ull, _mm512_load_si512(kIdx), src);
  const __m512i sh = _mm512_set_epi32(2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6, 0);
  return _mm512_and_si512(_mm512_srlv_epi32(two, sh), _mm512_set1_epi32(63));
#else
  alignas(64) int32_t c[16];
  for (int L = 0; L < 16; ++L) c[L] = int32_t(ReadCode(s, i + L, 6));
  return _mm512_load_si512(c);
#endif
}

// A 16-entry table of an FP4 E2M1 code (sign in bit 3) and 32-entry magnitude tables of FP6.
struct Luts {
  alignas(64) float fp4[16];
  alignas(64) float e2m3[32];
  alignas(64) float e3m2[32];
  Luts() {
    for (uint32_t c = 0; c < 16; ++c) fp4[c] = MxElementValue(MxFormat::kFp4E2M1, c);
    for (uint32_t c = 0; c < 32; ++c) {
      e2m3[c] = MxElementValue(MxFormat::kFp6E2M3, c);
      e3m2[c] = MxElementValue(MxFormat::kFp6E3M2, c);
    }
  }
};
const Luts& GetLuts() {
  static const Luts l;
  return l;
}

// The lookup registers a format's decoder needs, loaded once per kernel call.
template <MxFormat F>
inline void LoadLuts(__m512* lo, __m512* hi) {
  const Luts& l = GetLuts();
  if constexpr (F == MxFormat::kFp4E2M1 || F == MxFormat::kNvFp4) *lo = _mm512_load_ps(l.fp4);
  if constexpr (F == MxFormat::kFp6E2M3) *lo = _mm512_load_ps(l.e2m3), *hi = _mm512_load_ps(l.e2m3 + 16);
  if constexpr (F == MxFormat::kFp6E3M2) *lo = _mm512_load_ps(l.e3m2), *hi = _mm512_load_ps(l.e3m2 + 16);
}

// Elements i .. i+15 of the element stream `el`, as f32 before the block scale (E4M3 comes out
// divided by 2^8 and INT8 as the integer: kFold<F> restores both through the block scale).
template <MxFormat F>
inline __m512 Decode16(const uint8_t* el, int64_t i, __m512 lo, __m512 hi) {
  if constexpr (F == MxFormat::kFp8E4M3) {
    // An E4M3 byte placed in an f16 (exponent field shifted into f16's, bias 15 instead of 7)
    // is its value times 2^-8, subnormals included.
    __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(el + i)));
    __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x80)), 8),
                                _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x7F)), 7));
    return _mm512_cvtph_ps(h);
  } else if constexpr (F == MxFormat::kFp8E5M2) {  // E5M2 is the top byte of an f16
    __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(el + i)));
    return _mm512_cvtph_ps(_mm256_slli_epi16(b, 8));
  } else if constexpr (F == MxFormat::kInt8) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(el + i))));
  } else if constexpr (F == MxFormat::kFp4E2M1 || F == MxFormat::kNvFp4) {
    return _mm512_permutexvar_ps(Codes16(el, i, 4), lo);
  } else {  // FP6: 5-bit magnitude through two table registers, sign from bit 5
    __m512i c = Codes16(el, i, 6);
    __m512 mag = _mm512_permutex2var_ps(lo, c, hi);
    __m512i sign = _mm512_slli_epi32(_mm512_and_si512(c, _mm512_set1_epi32(32)), 26);
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(mag), sign));
  }
}

template <MxFormat F>
constexpr float kFold = F == MxFormat::kFp8E4M3 ? 256.0f : F == MxFormat::kInt8 ? 1.0f / 64 : 1.0f;
template <MxFormat F>
constexpr int kBlock = F == MxFormat::kNvFp4 ? 16 : 32;

// The f32 block scales of one row (kFold<F> included): nb values into sc.
template <MxFormat F>
inline void RowScales(const uint8_t* row, int nb, float* sc) {
  if constexpr (F == MxFormat::kNvFp4) {
    float rs;
    std::memcpy(&rs, row, 4);
    for (int b = 0; b < nb; ++b) sc[b] = rs * E4M3Value(row[4 + b]);
  } else {
    for (int b = 0; b < nb; ++b) sc[b] = E8M0Value(row[b]) * kFold<F>;
  }
}

inline __m256 Fold8(__m512 v) {  // 16 lanes -> 8 partial sums
  return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
// [sum(a), sum(b), sum(c), sum(d)] with one shared reduction.
inline __m128 Sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  __m256 ab = _mm256_hadd_ps(Fold8(a), Fold8(b));
  __m256 cd = _mm256_hadd_ps(Fold8(c), Fold8(d));
  __m256 abcd = _mm256_hadd_ps(ab, cd);
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

constexpr int kMaxBlocks = 64;  // rows up to 1024 elements take the fast paths (KV head dims are <= 256)

// MX scores, four rows per step: q is loaded once per 16 columns and the four dot products share
// one horizontal reduction.
template <MxFormat F>
void MxScores(const float* q, const PackedRows& k, float scale, float* scores) {
  const int dim = k.dim, d16 = dim & ~15, nb = (dim + kBlock<F> - 1) / kBlock<F>;
  const int64_t hdr = MxHeader(F, dim);
  const int w = MxElementBits(F);
  __m512 lo = _mm512_setzero_ps(), hi = lo;
  LoadLuts<F>(&lo, &hi);
  float sc[4][kMaxBlocks];
  auto tail = [&](const uint8_t* row, const float* scl, int i) {
    return q[i] * scl[i / kBlock<F>] / kFold<F> * MxElementValue(F, ReadCode(row + hdr, i, w));
  };
  int64_t j = 0;
  for (; j + 4 <= k.count; j += 4) {
    const uint8_t* r[4];
    for (int t = 0; t < 4; ++t) {
      r[t] = k.data + (j + t) * k.stride;
      RowScales<F>(r[t], nb, sc[t]);
    }
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < d16; i += 16) {
      const __m512 qv = _mm512_loadu_ps(q + i);
      const int b = i / kBlock<F>;
      a0 = _mm512_fmadd_ps(_mm512_mul_ps(qv, _mm512_set1_ps(sc[0][b])), Decode16<F>(r[0] + hdr, i, lo, hi), a0);
      a1 = _mm512_fmadd_ps(_mm512_mul_ps(qv, _mm512_set1_ps(sc[1][b])), Decode16<F>(r[1] + hdr, i, lo, hi), a1);
      a2 = _mm512_fmadd_ps(_mm512_mul_ps(qv, _mm512_set1_ps(sc[2][b])), Decode16<F>(r[2] + hdr, i, lo, hi), a2);
      a3 = _mm512_fmadd_ps(_mm512_mul_ps(qv, _mm512_set1_ps(sc[3][b])), Decode16<F>(r[3] + hdr, i, lo, hi), a3);
    }
    float s[4];
    _mm_storeu_ps(s, Sum4(a0, a1, a2, a3));
    for (int t = 0; t < 4; ++t) {
      for (int i = d16; i < dim; ++i) s[t] += tail(r[t], sc[t], i);
      scores[j + t] = s[t] * scale;
    }
  }
  for (; j < k.count; ++j) {
    const uint8_t* row = k.data + j * k.stride;
    RowScales<F>(row, nb, sc[0]);
    __m512 a = _mm512_setzero_ps();
    for (int i = 0; i < d16; i += 16)
      a = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_loadu_ps(q + i), _mm512_set1_ps(sc[0][i / kBlock<F>])), Decode16<F>(row + hdr, i, lo, hi), a);
    float s = _mm512_reduce_add_ps(a);
    for (int i = d16; i < dim; ++i) s += tail(row, sc[0], i);
    scores[j] = s * scale;
  }
}

// MX weighted sum, rows outer: NT column tiles stay in registers while each row is read once.
template <MxFormat F, int NT>
void MxAccumulateTiles(const float* p, const PackedRows& v, float* out) {
  const int dim = v.dim, nb = (dim + kBlock<F> - 1) / kBlock<F>;
  const int64_t hdr = MxHeader(F, dim);
  __m512 lo = _mm512_setzero_ps(), hi = lo;
  LoadLuts<F>(&lo, &hi);
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_loadu_ps(out + 16 * t);
  float sc[kMaxBlocks];
  for (int64_t j = 0; j < v.count; ++j) {
    const uint8_t* row = v.data + j * v.stride;
    RowScales<F>(row, nb, sc);
    for (int t = 0; t < NT; ++t)
      acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(p[j] * sc[16 * t / kBlock<F>]), Decode16<F>(row + hdr, 16 * t, lo, hi), acc[t]);
  }
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

template <MxFormat F>
void MxAccumulate(const float* p, const PackedRows& v, float* out) {
  const int dim = v.dim, d16 = dim & ~15;
  switch (d16 / 16) {
    case 0: break;
    case 1: MxAccumulateTiles<F, 1>(p, v, out); break;
    case 2: MxAccumulateTiles<F, 2>(p, v, out); break;
    case 4: MxAccumulateTiles<F, 4>(p, v, out); break;
    case 8: MxAccumulateTiles<F, 8>(p, v, out); break;
    default: {  // other widths: one register tile at a time over all rows
      const int nb = (dim + kBlock<F> - 1) / kBlock<F>;
      const int64_t hdr = MxHeader(F, dim);
      __m512 lo = _mm512_setzero_ps(), hi = lo;
      LoadLuts<F>(&lo, &hi);
      float sc[kMaxBlocks];
      for (int i = 0; i < d16; i += 16) {
        __m512 a = _mm512_loadu_ps(out + i);
        for (int64_t j = 0; j < v.count; ++j) {
          const uint8_t* row = v.data + j * v.stride;
          RowScales<F>(row, nb, sc);
          a = _mm512_fmadd_ps(_mm512_set1_ps(p[j] * sc[i / kBlock<F>]), Decode16<F>(row + hdr, i, lo, hi), a);
        }
        _mm512_storeu_ps(out + i, a);
      }
    }
  }
  if (d16 < dim) {
    const int w = MxElementBits(F);
    const int64_t hdr = MxHeader(F, dim);
    for (int64_t j = 0; j < v.count; ++j) {
      const uint8_t* row = v.data + j * v.stride;
      for (int i = d16; i < dim; ++i) out[i] += p[j] * MxBlockScale(F, row, dim, i) * MxElementValue(F, ReadCode(row + hdr, i, w));
    }
  }
}

template <typename Fn>
void DispatchMx(MxFormat f, Fn&& fn) {
  switch (f) {
    case MxFormat::kFp8E4M3: return fn(std::integral_constant<MxFormat, MxFormat::kFp8E4M3>{});
    case MxFormat::kFp8E5M2: return fn(std::integral_constant<MxFormat, MxFormat::kFp8E5M2>{});
    case MxFormat::kFp6E2M3: return fn(std::integral_constant<MxFormat, MxFormat::kFp6E2M3>{});
    case MxFormat::kFp6E3M2: return fn(std::integral_constant<MxFormat, MxFormat::kFp6E3M2>{});
    case MxFormat::kFp4E2M1: return fn(std::integral_constant<MxFormat, MxFormat::kFp4E2M1>{});
    case MxFormat::kInt8: return fn(std::integral_constant<MxFormat, MxFormat::kInt8>{});
    case MxFormat::kNvFp4: return fn(std::integral_constant<MxFormat, MxFormat::kNvFp4>{});
  }
}

// KIVI keys of one token group, four rows per step: dot((q*s), code) + q.z per row.
void KiviChannelScores(const float* q, const PackedRows& k, float scale, float* scores) {
  const int dim = k.dim, d16 = dim & ~15;
  std::vector<float>& qs = Scratch();
  qs.resize(size_t(dim));
  __m512 qzv = _mm512_setzero_ps();
  for (int c = 0; c < d16; c += 16) {
    const __m512 qv = _mm512_loadu_ps(q + c);
    const __m512 sv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(k.scale + c)));
    const __m512 zv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(k.zero + c)));
    _mm512_storeu_ps(&qs[size_t(c)], _mm512_mul_ps(qv, sv));
    qzv = _mm512_fmadd_ps(qv, zv, qzv);
  }
  float qz = _mm512_reduce_add_ps(qzv);
  for (int c = d16; c < dim; ++c) {
    qs[size_t(c)] = q[c] * F16(k.scale[c]);
    qz += q[c] * F16(k.zero[c]);
  }
  auto tail = [&](const uint8_t* row) {
    float s = 0;
    for (int i = d16; i < dim; ++i) s += qs[size_t(i)] * float(ReadCode(row, i, k.bits));
    return s;
  };
  int64_t j = 0;
  for (; j + 4 <= k.count; j += 4) {
    const uint8_t* r0 = k.data + j * k.stride;
    const uint8_t *r1 = r0 + k.stride, *r2 = r1 + k.stride, *r3 = r2 + k.stride;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < d16; i += 16) {
      const __m512 qv = _mm512_loadu_ps(&qs[size_t(i)]);
      a0 = _mm512_fmadd_ps(qv, _mm512_cvtepi32_ps(Codes16(r0, i, k.bits)), a0);
      a1 = _mm512_fmadd_ps(qv, _mm512_cvtepi32_ps(Codes16(r1, i, k.bits)), a1);
      a2 = _mm512_fmadd_ps(qv, _mm512_cvtepi32_ps(Codes16(r2, i, k.bits)), a2);
      a3 = _mm512_fmadd_ps(qv, _mm512_cvtepi32_ps(Codes16(r3, i, k.bits)), a3);
    }
    float s[4];
    _mm_storeu_ps(s, Sum4(a0, a1, a2, a3));
    const uint8_t* r[4] = {r0, r1, r2, r3};
    for (int t = 0; t < 4; ++t) scores[j + t] = (s[t] + tail(r[t]) + qz) * scale;
  }
  for (; j < k.count; ++j) {
    const uint8_t* row = k.data + j * k.stride;
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < d16; i += 16)
      acc = _mm512_fmadd_ps(_mm512_loadu_ps(&qs[size_t(i)]), _mm512_cvtepi32_ps(Codes16(row, i, k.bits)), acc);
    scores[j] = (_mm512_reduce_add_ps(acc) + tail(row) + qz) * scale;
  }
}

// KIVI values (own scale/zero per row and channel group; group % 16 == 0), rows outer with NT
// tiles in registers: out += (p*s) code per tile, and sum_j p*z per group added once at the end.
template <int NT>
void KiviTokenAccumulateTiles(const float* p, const PackedRows& v, float* out) {
  const int dim = v.dim, ng = (dim + v.group - 1) / v.group, tiles_per_group = v.group / 16;
  const int64_t code_off = 4 * ng;
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_loadu_ps(out + 16 * t);
  float zsum[kMaxBlocks] = {};
  for (int64_t j = 0; j < v.count; ++j) {
    const uint8_t* row = v.data + j * v.stride;
    for (int t = 0; t < NT; ++t) {
      const int g = t / tiles_per_group;
      uint16_t s;
      std::memcpy(&s, row + 2 * g, 2);
      acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(p[j] * F16(s)), _mm512_cvtepi32_ps(Codes16(row + code_off, 16 * t, v.bits)), acc[t]);
    }
    for (int g = 0; g < ng; ++g) {
      uint16_t z;
      std::memcpy(&z, row + 2 * (ng + g), 2);
      zsum[g] += p[j] * F16(z);
    }
  }
  for (int t = 0; t < NT; ++t)
    _mm512_storeu_ps(out + 16 * t, _mm512_add_ps(acc[t], _mm512_set1_ps(zsum[t / tiles_per_group])));
  for (int i = 16 * NT; i < dim; ++i) out[i] += zsum[i / v.group];  // the tail's zero terms; codes below
}
#endif

// Reference path for any layout: decode each row, then plain f32 arithmetic.
void ScoresByDecode(const float* q, const PackedRows& k, float scale, float* scores) {
  std::vector<float>& row = Scratch();
  row.resize(size_t(k.dim));
  for (int64_t j = 0; j < k.count; ++j) {
    DecodePackedRow(k, j, row.data());
    float s = 0;
    for (int i = 0; i < k.dim; ++i) s += q[i] * row[size_t(i)];
    scores[j] = s * scale;
  }
}

void AccumulateByDecode(const float* p, const PackedRows& v, float* out) {
  std::vector<float>& row = Scratch();
  row.resize(size_t(v.dim));
  for (int64_t j = 0; j < v.count; ++j) {
    DecodePackedRow(v, j, row.data());
    for (int i = 0; i < v.dim; ++i) out[i] += p[j] * row[size_t(i)];
  }
}

}  // namespace

int MxElementBits(MxFormat f) {
  switch (f) {
    case MxFormat::kFp6E2M3:
    case MxFormat::kFp6E3M2: return 6;
    case MxFormat::kFp4E2M1:
    case MxFormat::kNvFp4: return 4;
    default: return 8;
  }
}

int MxBlockSize(MxFormat f) { return f == MxFormat::kNvFp4 ? 16 : 32; }

int64_t MxRowBytes(MxFormat f, int dim) { return MxHeader(f, dim) + (int64_t(dim) * MxElementBits(f) + 7) / 8; }
int64_t KiviCodeBytes(int bits, int dim) { return (int64_t(dim) * bits + 7) / 8; }
int64_t KiviTokenRowBytes(int bits, int group, int dim) {
  return 4 * int64_t((dim + group - 1) / group) + KiviCodeBytes(bits, dim);
}

float MxElementValue(MxFormat f, uint32_t code) {
  switch (f) {
    case MxFormat::kFp8E4M3:
      if ((code & 0x7F) == 0x7F) return std::numeric_limits<float>::quiet_NaN();
      return MiniFloat(code, 4, 3, 7);
    case MxFormat::kFp8E5M2:
      if ((code & 0x7C) == 0x7C) {
        if (code & 3) return std::numeric_limits<float>::quiet_NaN();
        return (code & 0x80) ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity();
      }
      return MiniFloat(code, 5, 2, 15);
    case MxFormat::kFp6E2M3: return MiniFloat(code, 2, 3, 1);
    case MxFormat::kFp6E3M2: return MiniFloat(code, 3, 2, 3);
    case MxFormat::kFp4E2M1:
    case MxFormat::kNvFp4: return MiniFloat(code, 2, 1, 1);
    case MxFormat::kInt8: return float(int8_t(uint8_t(code))) / 64;
  }
  return 0;
}

float E8M0Value(uint8_t e) {
  // 2^(e-127) built from its bits: e = 0 is the subnormal 2^-127 (mantissa bit 22), 0xFF is NaN.
  const uint32_t bits = e == 0 ? 0x00400000u : e == 0xFF ? 0x7FC00000u : uint32_t(e) << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

namespace {
// Every E4M3 byte's value, built once at start-up (NVFP4 block scales are read per row).
const std::array<float, 256> kE4M3Values = [] {
  std::array<float, 256> t{};
  for (uint32_t c = 0; c < 256; ++c) t[c] = MxElementValue(MxFormat::kFp8E4M3, c);
  return t;
}();
}  // namespace

float E4M3Value(uint8_t b) { return kE4M3Values[b]; }

uint32_t ReadCode(const uint8_t* s, int64_t i, int w) {
  const int64_t bit = i * w, byte = bit >> 3;
  const int sh = int(bit & 7);
  uint32_t v = s[byte];
  if (sh + w > 8) v |= uint32_t(s[byte + 1]) << 8;
  return (v >> sh) & ((1u << w) - 1);
}

void DecodePackedRow(const PackedRows& r, int64_t j, float* out) {
  const uint8_t* row = r.data + j * r.stride;
  switch (r.layout) {
    case PackedLayout::kNone: break;
    case PackedLayout::kKiviChannel:
      for (int c = 0; c < r.dim; ++c) out[c] = F16(r.zero[c]) + F16(r.scale[c]) * float(ReadCode(row, c, r.bits));
      break;
    case PackedLayout::kKiviToken: {
      const int ng = (r.dim + r.group - 1) / r.group;
      uint16_t sc[2];
      const uint8_t* codes = row + 4 * ng;
      for (int c = 0; c < r.dim; ++c) {
        const int g = c / r.group;
        std::memcpy(&sc[0], row + 2 * g, 2);
        std::memcpy(&sc[1], row + 2 * (ng + g), 2);
        out[c] = F16(sc[1]) + F16(sc[0]) * float(ReadCode(codes, c, r.bits));
      }
      break;
    }
    case PackedLayout::kMx: {
      const uint8_t* el = row + MxHeader(r.mx, r.dim);
      const int w = MxElementBits(r.mx);
      for (int c = 0; c < r.dim; ++c) out[c] = MxBlockScale(r.mx, row, r.dim, c) * MxElementValue(r.mx, ReadCode(el, c, w));
      break;
    }
  }
}

void PackedScores(const float* q, const PackedRows& k, float scale, float* scores) {
#if defined(__AVX512F__)
  if (k.layout == PackedLayout::kKiviChannel) return KiviChannelScores(q, k, scale, scores);
  if (k.layout == PackedLayout::kMx && (k.dim + 15) / 16 <= kMaxBlocks)
    return DispatchMx(k.mx, [&](auto f) { MxScores<decltype(f)::value>(q, k, scale, scores); });
#endif
  ScoresByDecode(q, k, scale, scores);
}

void PackedAccumulate(const float* p, const PackedRows& v, float* out) {
#if defined(__AVX512F__)
  const int d16 = v.dim & ~15;
  if (v.layout == PackedLayout::kKiviToken && v.group % 16 == 0 && (v.dim + v.group - 1) / v.group <= kMaxBlocks &&
      (d16 == 16 || d16 == 32 || d16 == 64 || d16 == 128)) {
    switch (d16 / 16) {
      case 1: KiviTokenAccumulateTiles<1>(p, v, out); break;
      case 2: KiviTokenAccumulateTiles<2>(p, v, out); break;
      case 4: KiviTokenAccumulateTiles<4>(p, v, out); break;
      default: KiviTokenAccumulateTiles<8>(p, v, out); break;
    }
    for (int64_t j = 0; j < v.count && d16 < v.dim; ++j) {  // tail columns: (p*s) code (zero terms added above)
      const uint8_t* row = v.data + j * v.stride;
      const int ng = (v.dim + v.group - 1) / v.group;
      for (int i = d16; i < v.dim; ++i) {
        uint16_t s;
        std::memcpy(&s, row + 2 * (i / v.group), 2);
        out[i] += p[j] * F16(s) * float(ReadCode(row + 4 * ng, i, v.bits));
      }
    }
    return;
  }
  if (v.layout == PackedLayout::kMx && (v.dim + 15) / 16 <= kMaxBlocks)
    return DispatchMx(v.mx, [&](auto f) { MxAccumulate<decltype(f)::value>(p, v, out); });
#endif
  AccumulateByDecode(p, v, out);
}

}  // namespace atp
