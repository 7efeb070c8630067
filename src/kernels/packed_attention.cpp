#include "kernels/packed_attention.h"

#include <immintrin.h>

#include <array>

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "kernels/simd.h"

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

#if ATP_SIMD_WIDTH == 16
using IVec = __m512i;
// 16 codes of w bits, elements i .. i+15 of a stream (i a multiple of 16), as int32 lanes.
inline IVec Codes(const uint8_t* s, int64_t i, int w) {
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
inline __m512 CodeValues(const uint8_t* s, int64_t i, int w) { return _mm512_cvtepi32_ps(Codes(s, i, w)); }
#elif ATP_SIMD_WIDTH == 8
using IVec = __m256i;
// 8 codes of w bits, elements i .. i+7 of a stream (i a multiple of 8), as int32 lanes. Each width
// reads exactly the w bytes that hold them, so the last codes of a row never read past it.
inline IVec Codes(const uint8_t* s, int64_t i, int w) {
  if (w == 8) return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i)));
  if (w == 4) {
    uint32_t u;
    std::memcpy(&u, s + i / 2, 4);
    const __m256i sh = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(u)), sh), _mm256_set1_epi32(15));
  }
  if (w == 2) {
    uint16_t u;
    std::memcpy(&u, s + i / 4, 2);
    const __m256i sh = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(u), sh), _mm256_set1_epi32(3));
  }
  // w == 6: 8 elements in 6 bytes, four in each 3-byte half, so 32-bit shifts of each half suffice.
  uint64_t u = 0;
  std::memcpy(&u, s + i * 6 / 8, 6);
  const int lo = int(u & 0xFFFFFF), hi = int(u >> 24);
  const __m256i sh = _mm256_setr_epi32(0, 6, 12, 18, 0, 6, 12, 18);
  return _mm256_and_si256(_mm256_srlv_epi32(_mm256_setr_epi32(lo, lo, lo, lo, hi, hi, hi, hi), sh), _mm256_set1_epi32(63));
}
inline __m256 CodeValues(const uint8_t* s, int64_t i, int w) { return _mm256_cvtepi32_ps(Codes(s, i, w)); }
#endif

#if defined(ATP_SIMD_WIDTH)
using simd::kLanes;
using simd::Vec;

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

// The lookup registers a format's decoder needs, loaded once per kernel call: FP4 takes the first
// register (all 16 codes with AVX-512, the 8 magnitudes with AVX2), FP6 its 32 magnitudes.
struct Tables {
  Vec v[32 / kLanes];
};
template <MxFormat F>
inline Tables LoadTables() {
  const Luts& l = GetLuts();
  Tables t{};
  if constexpr (F == MxFormat::kFp4E2M1 || F == MxFormat::kNvFp4) t.v[0] = simd::Load(l.fp4);
  for (int r = 0; r < 32 / kLanes; ++r) {
    if constexpr (F == MxFormat::kFp6E2M3) t.v[r] = simd::Load(l.e2m3 + r * kLanes);
    if constexpr (F == MxFormat::kFp6E3M2) t.v[r] = simd::Load(l.e3m2 + r * kLanes);
  }
  return t;
}

// Elements i .. i+kLanes-1 of the element stream `el`, as f32 before the block scale (E4M3 comes
// out divided by 2^8 and INT8 as the integer: kFold<F> restores both through the block scale).
#if ATP_SIMD_WIDTH == 16
template <MxFormat F>
inline __m512 Decode(const uint8_t* el, int64_t i, const Tables& t) {
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
    return _mm512_permutexvar_ps(Codes(el, i, 4), t.v[0]);
  } else {  // FP6: 5-bit magnitude through two table registers, sign from bit 5
    __m512i c = Codes(el, i, 6);
    __m512 mag = _mm512_permutex2var_ps(t.v[0], c, t.v[1]);
    __m512i sign = _mm512_slli_epi32(_mm512_and_si512(c, _mm512_set1_epi32(32)), 26);
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(mag), sign));
  }
}
#else
// The same decoders on 8 lanes. AVX2's permutes index 8 entries, so FP4 looks up its magnitude (the
// table's positive half) and takes the sign from bit 3, and FP6 selects among four 8-entry tables
// with two levels of blends on index bits 3 and 4.
template <MxFormat F>
inline __m256 Decode(const uint8_t* el, int64_t i, const Tables& t) {
  if constexpr (F == MxFormat::kFp8E4M3) {  // as an f16, see the AVX-512 decoder
    __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(el + i)));
    __m128i h = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x80)), 8),
                             _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x7F)), 7));
    return _mm256_cvtph_ps(h);
  } else if constexpr (F == MxFormat::kFp8E5M2) {
    __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(el + i)));
    return _mm256_cvtph_ps(_mm_slli_epi16(b, 8));
  } else if constexpr (F == MxFormat::kInt8) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(el + i))));
  } else if constexpr (F == MxFormat::kFp4E2M1 || F == MxFormat::kNvFp4) {
    __m256i c = Codes(el, i, 4);
    __m256 mag = _mm256_permutevar8x32_ps(t.v[0], c);  // uses index bits 0..2
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(8)), 28);
    return _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(mag), sign));
  } else {
    __m256i c = Codes(el, i, 6);
    const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(c, 28)), bit4 = _mm256_castsi256_ps(_mm256_slli_epi32(c, 27));
    __m256 m01 = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t.v[0], c), _mm256_permutevar8x32_ps(t.v[1], c), bit3);
    __m256 m23 = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t.v[2], c), _mm256_permutevar8x32_ps(t.v[3], c), bit3);
    __m256 mag = _mm256_blendv_ps(m01, m23, bit4);
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(32)), 26);
    return _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(mag), sign));
  }
}
#endif

template <MxFormat F>
constexpr float kFold = F == MxFormat::kFp8E4M3 ? 256.0f : F == MxFormat::kInt8 ? 1.0f / 64 : 1.0f;
template <MxFormat F>
constexpr int kBlock = F == MxFormat::kNvFp4 ? 16 : 32;  // a multiple of kLanes: no vector straddles two blocks

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

constexpr int kMaxBlocks = 64;  // rows up to 1024 elements take the fast paths (KV head dims are <= 256)

// Calls fn(integral_constant<NT>, c0) for runs of NT register tiles covering columns
// [0, tiles * kLanes): as many runs of 8 as fit, then 4, 2, 1. Eight accumulators still leave room
// for the lookup tables in AVX2's 16 registers; with AVX-512, head dims 16..128 are a single run.
template <typename Fn>
void ForTileRuns(int tiles, Fn&& fn) {
  int t = 0;
  for (; t + 8 <= tiles; t += 8) fn(std::integral_constant<int, 8>{}, t * kLanes);
  if (t + 4 <= tiles) fn(std::integral_constant<int, 4>{}, t * kLanes), t += 4;
  if (t + 2 <= tiles) fn(std::integral_constant<int, 2>{}, t * kLanes), t += 2;
  if (t + 1 <= tiles) fn(std::integral_constant<int, 1>{}, t * kLanes);
}

// MX scores, four rows per step: q is loaded once per kLanes columns and the four dot products
// share one horizontal reduction. A row's score is the same bit for bit in a group of four or alone
// (the same reduction, explicit fused multiply-adds in the tail), as for plain rows
// (kernels/attention.h): scores do not depend on how a query's rows were split into calls.
template <MxFormat F>
void MxScores(const float* q, const PackedRows& k, float scale, float* scores) {
  using namespace simd;
  const int dim = k.dim, dv = dim & ~(kLanes - 1), nb = (dim + kBlock<F> - 1) / kBlock<F>;
  const int64_t hdr = MxHeader(F, dim);
  const int w = MxElementBits(F);
  const Tables lut = LoadTables<F>();
  float sc[4][kMaxBlocks];
  auto tail = [&](const uint8_t* row, const float* scl, int i, float s) {
    return std::fma(q[i] * scl[i / kBlock<F>] / kFold<F>, MxElementValue(F, ReadCode(row + hdr, i, w)), s);
  };
  int64_t j = 0;
  for (; j + 4 <= k.count; j += 4) {
    const uint8_t* r[4];
    for (int t = 0; t < 4; ++t) {
      r[t] = k.data + (j + t) * k.stride;
      RowScales<F>(r[t], nb, sc[t]);
    }
    Vec a0 = Zero(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < dv; i += kLanes) {
      const Vec qv = Load(q + i);
      const int b = i / kBlock<F>;
      a0 = Fma(Mul(qv, Set1(sc[0][b])), Decode<F>(r[0] + hdr, i, lut), a0);
      a1 = Fma(Mul(qv, Set1(sc[1][b])), Decode<F>(r[1] + hdr, i, lut), a1);
      a2 = Fma(Mul(qv, Set1(sc[2][b])), Decode<F>(r[2] + hdr, i, lut), a2);
      a3 = Fma(Mul(qv, Set1(sc[3][b])), Decode<F>(r[3] + hdr, i, lut), a3);
    }
    float s[4];
    _mm_storeu_ps(s, Sum4(a0, a1, a2, a3));
    for (int t = 0; t < 4; ++t) {
      for (int i = dv; i < dim; ++i) s[t] = tail(r[t], sc[t], i, s[t]);
      scores[j + t] = s[t] * scale;
    }
  }
  for (; j < k.count; ++j) {
    const uint8_t* row = k.data + j * k.stride;
    RowScales<F>(row, nb, sc[0]);
    Vec a = Zero();
    for (int i = 0; i < dv; i += kLanes)
      a = Fma(Mul(Load(q + i), Set1(sc[0][i / kBlock<F>])), Decode<F>(row + hdr, i, lut), a);
    float s = _mm_cvtss_f32(Sum4(a, Zero(), Zero(), Zero()));
    for (int i = dv; i < dim; ++i) s = tail(row, sc[0], i, s);
    scores[j] = s * scale;
  }
}

// MX weighted sum of columns [c0, c0 + NT * kLanes), rows outer: the NT column tiles stay in
// registers while each row is read once.
template <MxFormat F, int NT>
void MxAccumulateTiles(const float* p, const PackedRows& v, int c0, float* out) {
  using namespace simd;
  const int dim = v.dim, nb = (dim + kBlock<F> - 1) / kBlock<F>;
  const int64_t hdr = MxHeader(F, dim);
  const Tables lut = LoadTables<F>();
  Vec acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = Load(out + c0 + kLanes * t);
  float sc[kMaxBlocks];
  for (int64_t j = 0; j < v.count; ++j) {
    const uint8_t* row = v.data + j * v.stride;
    RowScales<F>(row, nb, sc);
    for (int t = 0; t < NT; ++t) {
      const int c = c0 + kLanes * t;
      acc[t] = Fma(Set1(p[j] * sc[c / kBlock<F>]), Decode<F>(row + hdr, c, lut), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) Store(out + c0 + kLanes * t, acc[t]);
}

template <MxFormat F>
void MxAccumulate(const float* p, const PackedRows& v, float* out) {
  const int dim = v.dim, dv = dim & ~(kLanes - 1);
  ForTileRuns(dv / kLanes, [&](auto nt, int c0) { MxAccumulateTiles<F, decltype(nt)::value>(p, v, c0, out); });
  if (dv < dim) {
    const int w = MxElementBits(F);
    const int64_t hdr = MxHeader(F, dim);
    for (int64_t j = 0; j < v.count; ++j) {
      const uint8_t* row = v.data + j * v.stride;
      for (int i = dv; i < dim; ++i) out[i] += p[j] * MxBlockScale(F, row, dim, i) * MxElementValue(F, ReadCode(row + hdr, i, w));
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
  using namespace simd;
  const int dim = k.dim, dv = dim & ~(kLanes - 1);
  std::vector<float>& qs = Scratch();
  qs.resize(size_t(dim));
  Vec qzv = Zero();
  for (int c = 0; c < dv; c += kLanes) {
    const Vec qv = Load(q + c);
    Store(&qs[size_t(c)], Mul(qv, LoadF16(k.scale + c)));
    qzv = Fma(qv, LoadF16(k.zero + c), qzv);
  }
  float qz = ReduceAdd(qzv);
  for (int c = dv; c < dim; ++c) {
    qs[size_t(c)] = q[c] * F16(k.scale[c]);
    qz += q[c] * F16(k.zero[c]);
  }
  auto tail = [&](const uint8_t* row) {
    float s = 0;
    for (int i = dv; i < dim; ++i) s += qs[size_t(i)] * float(ReadCode(row, i, k.bits));
    return s;
  };
  int64_t j = 0;
  for (; j + 4 <= k.count; j += 4) {
    const uint8_t* r0 = k.data + j * k.stride;
    const uint8_t *r1 = r0 + k.stride, *r2 = r1 + k.stride, *r3 = r2 + k.stride;
    Vec a0 = Zero(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < dv; i += kLanes) {
      const Vec qv = Load(&qs[size_t(i)]);
      a0 = Fma(qv, CodeValues(r0, i, k.bits), a0);
      a1 = Fma(qv, CodeValues(r1, i, k.bits), a1);
      a2 = Fma(qv, CodeValues(r2, i, k.bits), a2);
      a3 = Fma(qv, CodeValues(r3, i, k.bits), a3);
    }
    float s[4];
    _mm_storeu_ps(s, Sum4(a0, a1, a2, a3));
    const uint8_t* r[4] = {r0, r1, r2, r3};
    for (int t = 0; t < 4; ++t) scores[j + t] = (s[t] + tail(r[t]) + qz) * scale;
  }
  for (; j < k.count; ++j) {
    const uint8_t* row = k.data + j * k.stride;
    Vec acc = Zero();
    for (int i = 0; i < dv; i += kLanes) acc = Fma(Load(&qs[size_t(i)]), CodeValues(row, i, k.bits), acc);
    scores[j] = (ReduceAdd(acc) + tail(row) + qz) * scale;
  }
}

// KIVI values (own scale/zero per row and channel group; group % kLanes == 0), rows outer with NT
// tiles of columns [c0, c0 + NT * kLanes) in registers: out += (p*s) code. The zero terms do not
// depend on the column: with zsum non-null the same pass gathers zsum[g] = sum_j p*z for every group.
template <int NT>
void KiviTokenAccumulateTiles(const float* p, const PackedRows& v, int c0, float* out, float* zsum) {
  using namespace simd;
  const int dim = v.dim, ng = (dim + v.group - 1) / v.group;
  const int64_t code_off = 4 * ng;
  Vec acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = Load(out + c0 + kLanes * t);
  for (int64_t j = 0; j < v.count; ++j) {
    const uint8_t* row = v.data + j * v.stride;
    for (int t = 0; t < NT; ++t) {
      const int c = c0 + kLanes * t;
      uint16_t s;
      std::memcpy(&s, row + 2 * (c / v.group), 2);
      acc[t] = Fma(Set1(p[j] * F16(s)), CodeValues(row + code_off, c, v.bits), acc[t]);
    }
    if (zsum) {
      for (int g = 0; g < ng; ++g) {
        uint16_t z;
        std::memcpy(&z, row + 2 * (ng + g), 2);
        zsum[g] += p[j] * F16(z);
      }
    }
  }
  for (int t = 0; t < NT; ++t) Store(out + c0 + kLanes * t, acc[t]);
}

void KiviTokenAccumulate(const float* p, const PackedRows& v, float* out) {
  const int dim = v.dim, dv = dim & ~(kLanes - 1), ng = (dim + v.group - 1) / v.group;
  float zsum[kMaxBlocks] = {};
  ForTileRuns(dv / kLanes, [&](auto nt, int c0) {
    KiviTokenAccumulateTiles<decltype(nt)::value>(p, v, c0, out, c0 == 0 ? zsum : nullptr);
  });
  for (int i = 0; i < dim; ++i) out[i] += zsum[i / v.group];
  for (int64_t j = 0; j < v.count && dv < dim; ++j) {  // tail columns: (p*s) code
    const uint8_t* row = v.data + j * v.stride;
    for (int i = dv; i < dim; ++i) {
      uint16_t s;
      std::memcpy(&s, row + 2 * (i / v.group), 2);
      out[i] += p[j] * F16(s) * float(ReadCode(row + 4 * ng, i, v.bits));
    }
  }
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
#if defined(ATP_SIMD_WIDTH)
  if (k.layout == PackedLayout::kKiviChannel) return KiviChannelScores(q, k, scale, scores);
  if (k.layout == PackedLayout::kMx && (k.dim + 15) / 16 <= kMaxBlocks)
    return DispatchMx(k.mx, [&](auto f) { MxScores<decltype(f)::value>(q, k, scale, scores); });
#endif
  ScoresByDecode(q, k, scale, scores);
}

void PackedAccumulate(const float* p, const PackedRows& v, float* out) {
#if defined(ATP_SIMD_WIDTH)
  if (v.layout == PackedLayout::kKiviToken && v.group % kLanes == 0 && (v.dim + v.group - 1) / v.group <= kMaxBlocks &&
      v.dim >= kLanes)
    return KiviTokenAccumulate(p, v, out);
  if (v.layout == PackedLayout::kMx && (v.dim + 15) / 16 <= kMaxBlocks)
    return DispatchMx(v.mx, [&](auto f) { MxAccumulate<decltype(f)::value>(p, v, out); });
#endif
  AccumulateByDecode(p, v, out);
}

}  // namespace atp
