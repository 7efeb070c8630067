#include "kernels/q8_dot.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/interleave.h"
#include "core/kquant.h"

namespace atp {

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define ATP_Q8_AVX2 1
#endif

namespace {

// One block of 32 values: codes to q, returns d; sums of the two halves' codes to sum.
float QuantizeBlock(const float* x, int8_t* q, int sum[2]) {
#if defined(ATP_Q8_AVX2)
  __m256 v[4];
  __m256 amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_loadu_ps(x + 8 * i);
    const __m256 a = _mm256_andnot_ps(sign, v[i]);
    amax = _mm256_max_ps(amax, a);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, _mm256_set1_ps(FLT_MAX), _CMP_NLE_UQ));  // inf or NaN
  }
  if (_mm256_movemask_ps(bad)) {
    std::memset(q, 0, 32);
    sum[0] = sum[1] = 0;
    return NAN;
  }
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  const float am = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
  const __m256 id = _mm256_set1_ps(am > 0 ? 127 / am : 0);
  __m256i c[4];
  for (int i = 0; i < 4; ++i) c[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id));  // rounds to nearest even, as lrint
  for (int h = 0; h < 2; ++h) {
    __m256i s = _mm256_add_epi32(c[2 * h], c[2 * h + 1]);
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
    sum[h] = _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1)));
  }
  // Narrow to bytes: the packs interleave 128-bit lanes, the final permute puts the 4-byte groups back in order.
  const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  return am / 127;
#else
  float amax = 0;
  bool finite = true;
  for (int j = 0; j < 32; ++j) {
    finite = finite && std::abs(x[j]) <= FLT_MAX;
    amax = std::max(amax, std::abs(x[j]));
  }
  const float id = finite && amax > 0 ? 127 / amax : 0;
  sum[0] = sum[1] = 0;
  for (int j = 0; j < 32; ++j) {
    q[j] = int8_t(std::lrint(x[j] * id));
    sum[j / 16] += q[j];
  }
  return finite ? amax / 127 : NAN;
#endif
}

}  // namespace

Q8Rows Q8Buffer::Quantize(const float* x, int64_t n, int64_t in) {
  if (in % 32 != 0) std::abort();  // callers pass whole weight blocks' worth of columns
  const int64_t nb = n * (in / 32);
  q_.resize(size_t(nb * 32));
  d_.resize(size_t(nb));
  sum_.resize(size_t(nb));
  half_.resize(size_t(2 * nb));
  for (int64_t i = 0; i < nb; ++i) {
    int s[2];
    const float d = QuantizeBlock(x + 32 * i, q_.data() + 32 * i, s);
    d_[size_t(i)] = d;
    sum_[size_t(i)] = d * float(s[0] + s[1]);
    half_[size_t(2 * i)] = d * float(s[0]);
    half_[size_t(2 * i + 1)] = d * float(s[1]);
  }
  return {in / 32, q_.data(), d_.data(), sum_.data(), half_.data()};
}

bool HasQ8Dot(DType t) { return IsBlockDType(t); }

namespace {

float Half(const uint8_t* p) { return F16ToF32(uint16_t(p[0] | p[1] << 8)); }

// Element j of a chunk in halves of 16: the same integer scale (and min) for both halves.
void Uniform(Q8Chunk* c, int32_t scale, int32_t min) {
  c->scale[0] = c->scale[1] = scale;
  c->min[0] = c->min[1] = min;
}

// Q3_K's scale s of 16, signed 6-bit (stored + 32; layout in core/kquant.h).
int Q3Scale(const uint8_t* sc, int s) {
  const int low = s < 8 ? sc[s] & 0xf : sc[s - 8] >> 4;
  const int high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
  return (low | high << 4) - 32;
}

}  // namespace

// Each case reads the layout as core/quant.h and core/kquant.h describe it (element by element; the
// AVX2 kernels below read the same bytes 32 at a time).
void DecodeQ8Terms(DType t, const uint8_t* p, Q8Terms* o) {
  o->b = 0;
  o->chunks = int(DTypeBlockElems(t) / 32);
  Q8Chunk* c = o->c;
  // 32-element blocks: element j < 16 is the low nibble of qs[j], j + 16 its high nibble.
  auto nibble = [](const uint8_t* qs, int j) { return (qs[j % 16] >> (4 * (j / 16))) & 0xf; };
  switch (t) {
    case DType::kQ8_0:
    case DType::kIQ4_NL:
      o->a = Half(p);
      Uniform(c, 1, 0);
      for (int j = 0; j < 32; ++j) c->v[j] = t == DType::kQ8_0 ? int8_t(p[2 + j]) : kIq4NlValues[nibble(p + 2, j)];
      return;
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1: {  // Q5_x: bit j of the 32-bit qh is bit 4 of element j
      // Q4_1/Q5_1: x = d q + m, so b = -m with min 1; Q4_0/Q5_0: x = d (q - 8) (or 16): b = d, min 8 (16).
      const bool has_min = t == DType::kQ4_1 || t == DType::kQ5_1, five = t == DType::kQ5_0 || t == DType::kQ5_1;
      o->a = Half(p);
      o->b = has_min ? -Half(p + 2) : o->a;
      const uint8_t* qh = p + (has_min ? 4 : 2);
      const uint8_t* qs = five ? qh + 4 : qh;
      Uniform(c, 1, has_min ? 1 : five ? 16 : 8);
      for (int j = 0; j < 32; ++j) c->v[j] = int8_t(nibble(qs, j) | (five ? ((qh[j / 8] >> (j % 8)) & 1) << 4 : 0));
      return;
    }
    case DType::kQ4_K:
    case DType::kQ5_K: {
      o->a = Half(p);
      o->b = Half(p + 2);
      const uint8_t* qs = p + (t == DType::kQ4_K ? 16 : 48);
      for (int k = 0; k < 8; ++k) {  // sub-block k: elements 32 k + l, nibble k % 2 of qs[32 (k / 2) + l]
        int sc, m;
        ScaleMinK4(p + 4, k, &sc, &m);
        Uniform(c + k, sc, m);
        for (int l = 0; l < 32; ++l) {
          int q = (qs[32 * (k / 2) + l] >> (4 * (k % 2))) & 0xf;
          if (t == DType::kQ5_K) q |= ((p[16 + l] >> k) & 1) << 4;  // bit k of qh[l]
          c[k].v[l] = int8_t(q);
        }
      }
      return;
    }
    case DType::kIQ4_XS: {
      o->a = Half(p);
      const int sh = p[2] | p[3] << 8;
      for (int k = 0; k < 8; ++k) {  // sub-block k: codes qs[16 k..] as IQ4_NL
        const int ls = ((p[4 + k / 2] >> (4 * (k % 2))) & 0xf) | ((sh >> (2 * k)) & 3) << 4;
        Uniform(c + k, ls - 32, 0);
        for (int j = 0; j < 32; ++j) c[k].v[j] = kIq4NlValues[nibble(p + 8 + 16 * k, j)];
      }
      return;
    }
    case DType::kQ2_K:
    case DType::kQ3_K:
    case DType::kQ6_K: {
      // Element 128 h + 32 k + l: chunk 4 h + k, its halves sub-blocks 8 h + 2 k and 8 h + 2 k + 1.
      // Offsets are mins: Q6_K's d * scale * (q - 32) = a * scale * q - b * 32 * scale, Q3_K's 4 likewise.
      o->a = Half(p + (t == DType::kQ2_K ? 80 : t == DType::kQ3_K ? 108 : 208));
      o->b = t == DType::kQ2_K ? Half(p + 82) : o->a;
      for (int h = 0; h < 2; ++h)
        for (int k = 0; k < 4; ++k) {
          Q8Chunk& ck = c[4 * h + k];
          for (int i = 0; i < 2; ++i) {
            const int s = 8 * h + 2 * k + i;
            if (t == DType::kQ2_K) {
              ck.scale[i] = p[s] & 0xf;
              ck.min[i] = p[s] >> 4;
            } else {
              ck.scale[i] = t == DType::kQ3_K ? Q3Scale(p + 96, s) : int8_t(p[192 + s]);
              ck.min[i] = (t == DType::kQ3_K ? 4 : 32) * ck.scale[i];
            }
          }
          for (int l = 0; l < 32; ++l) {
            if (t == DType::kQ6_K) {
              const int lo = (p[64 * h + l + 32 * (k % 2)] >> (k < 2 ? 0 : 4)) & 0xf;
              const int hi = (p[128 + 32 * h + l] >> (2 * k)) & 3;
              ck.v[l] = int8_t(lo | hi << 4);
            } else {
              const int low2 = (p[(t == DType::kQ2_K ? 16 : 32) + 32 * h + l] >> (2 * k)) & 3;
              ck.v[l] = int8_t(t == DType::kQ2_K ? low2 : low2 | ((p[l] >> (4 * h + k)) & 1) << 2);  // Q3_K: bit 2 from hmask[l]
            }
          }
        }
      return;
    }
    default: std::abort();  // f32/f16/bf16 have no blocks: HasQ8Dot(t) is the caller's contract
  }
}

void DotRowQ8Ref(DType t, const uint8_t* w, int64_t n_out, int64_t in, const Q8Rows& x, int rows, float* y, int64_t out) {
  const int64_t elems = DTypeBlockElems(t), nb = in / elems;
  const size_t bytes = DTypeBytes(t, elems), row_bytes = DTypeBytes(t, in);
  Q8Terms terms;
  for (int64_t o = 0; o < n_out; ++o) {
    float acc[8] = {};
    for (int64_t b = 0; b < nb; ++b) {
      DecodeQ8Terms(t, w + size_t(o) * row_bytes + size_t(b) * bytes, &terms);
      for (int r = 0; r < rows; ++r) {
        float sb = 0, mb = 0;  // sum over chunks of d * integer dot, and of the min terms
        for (int k = 0; k < terms.chunks; ++k) {
          const Q8Chunk& c = terms.c[k];
          const int64_t i = r * x.blocks + b * terms.chunks + k;  // the activation block
          int64_t dot = 0;
          for (int h = 0; h < 2; ++h) {
            int64_t half = 0;
            for (int j = 16 * h; j < 16 * h + 16; ++j) half += int64_t(c.v[j]) * x.q[32 * i + j];
            dot += c.scale[h] * half;
          }
          sb += float(dot) * x.d[i];
          mb += float(c.min[0]) * x.half[2 * i] + float(c.min[1]) * x.half[2 * i + 1];
        }
        acc[r] += terms.a * sb - terms.b * mb;
      }
    }
    for (int r = 0; r < rows; ++r) y[r * out + o] = acc[r];
  }
}

#if defined(ATP_Q8_AVX2)
namespace {

// The AVX2 kernels: per chunk, 8 int32 lanes of partial integer dots (exact: maddubs pairs stay below
// 2^15 for codes |v| <= 128 against |q| <= 127, and every lane below 2^24, so its conversion to f32
// is exact too), scaled by the activation block's d into f32 accumulators. The integers are those of
// DecodeQ8Terms.

inline float HalfInline(const uint8_t* p) { return _cvtsh_ss(uint16_t(p[0] | p[1] << 8)); }  // no call: keeps the accumulators in registers
inline __m256i Load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
// 4 activation codes at q in every 32-bit lane (the interleaved kernels' other operand).
inline __m256i Code4(const int8_t* q) {
  int32_t c;
  std::memcpy(&c, q, 4);
  return _mm256_set1_epi32(c);
}
// Asks for the Lines cache lines from Ahead past p: called once per weight block with Lines *
// 64 >= the block's bytes, it touches every line of a matrix that is read front to back, as the
// kernels read each matrix once per token, mostly from L3 or memory (atp-40m's block files: 15-41 MB).
// A fixed count, so the calls unroll. Past the end of a matrix it touches nothing harmful.
constexpr size_t kPrefetchAhead = 4096;
// Hints as __builtin_prefetch's locality (GCC and Clang alike; Clang has no _mm_hint type): 3 is
// prefetcht0 (into L1), 2 prefetcht1 (into L2).
constexpr int kIntoL1 = 3, kIntoL2 = 2;
// How far ahead the group kernels ask for their lines (ForGroups), which depends on the machine: the
// plan is chosen once per process (GroupPrefetch) from the CPU's vendor, measured on the two machines
// this project has run on.
// - On the Xeon (AVX-512 VNNI): into L1 at a distance per type, and into L2 4 KiB ahead for every type
// (each level alone lost to the pair). Measured on the
// llama-3.2-1b shape's decode (llama-quantize files, weights from memory, alternated runs of two
// rounds, ms per token at one thread, then two):
// - L1: 1 KiB for Q4_K, Q5_K, Q6_K and IQ4_XS (1088-1680 bytes a group block; 4 KiB into L1 made
//   decode 1.4-1.5x slower, Q4_K_M 83 against 56 ms, 1.5 and 2 KiB lost too), 2 KiB for Q2_K and Q3_K
//   (672 and 880 bytes; 1 and 3 KiB lost, 4 KiB fell to 0.66-0.67 of the read bandwidth for Q2_K), 1
//   KiB for the 32-element types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL; 144-272 bytes).
// - L2 besides, at 4 KiB: Q4_K_M 59.3/57.0 against 63.4/61.6 (L1 alone), 31.7/31.7 against 34.7/34.3;
//   Q5_K_M 67.7/63.7 against 70.8/68.7, 36.0/35.4 against 38.8/39.6; Q6_K 71.5/68.0 against
//   78.6/75.8, 37.7/36.8 against 41.9/41.3; IQ4_XS 56.8/54.2 against 60.7/60.4, 28.8/29.2 against
//   31.5/29.6; Q2_K 45.4/44.7 against 49.9/45.5, 23.6/23.4 against 25.9/25.2; Q3_K_M 54.2/53.1
//   against 57.3/55.1, 27.9/28.5 against 30.0/31.2. 3 KiB was level (Q4_K_M 58.1/57.6, Q6_K
//   72.1/71.0), 2 KiB between, 6 KiB level for Q2_K and Q3_K, 6 and 8 KiB back near L1 alone for
//   Q4_K_M. The 32-element types took L2 alone before (Q8_0 84.1/84.3 against 90.8/88.5 into L1
//   alone, Q4_0 51.6/50.8 against 61.1/55.7); L1 besides: Q4_0 52.3/54.8 against 54.8/57.1, 28.8/29.4
//   against 29.6/30.9; Q8_0 85.2/86.2 against 89.5/94.0, 46.7/47.1 against 48.1/48.8.
// - On the AMD EPYC (Zen 3 as GCC names it; AVX2, AVX-512 hidden by its hypervisor) the L1 requests
//   cost a third: the same shape's files written by `atp convert`, ms per token at one thread (the
//   Xeon's plan / L2 alone at 8 KiB / at 16 KiB / no prefetch): Q8_0 75.2 / 53.1 / 53.0 / 46.8, Q4_0
//   37.9 / 26.2 / 30.0 / 26.4, Q4_K_M 52.4 / 38.3 / 38.9 / 78.6, Q6_K 63.0 / 48.0 / 49.8 / 159, Q5_K_M
//   67.1 / 54.5 / 52.2, IQ4_XS 50.8 / 44.8 / 45.6 / 44.4, Q2_K 32.0 / 33.5 / 34.0 / 31.6 (bound by
//   its arithmetic); at two threads Q8_0 44.7 / 42.3 / 43.2, Q4_0 21.7 / 21.8 / 17.6, Q4_K_M 32.2 /
//   26.8 / 25.8, Q6_K 37.5 / 33.5 / 31.0, Q5_K_M 37.3 / 30.9 / 29.5, IQ4_XS 29.1 / 26.0 / 24.7. 2 KiB
//   into L2 alone lost (Q4_0 51.4), 32 KiB was level with 16; so L2 alone, 8 KiB ahead (level with
//   16 KiB over both thread counts, and nearer the Xeon's distance).
// The row-by-row kernels (--no-repack) ask kPrefetchAhead into L1, not measured against these.
template <DType T>
constexpr size_t kGroupAheadL1 = T == DType::kQ2_K || T == DType::kQ3_K ? 2048 : 1024;
struct GroupPrefetch {
  bool l1;          // also into L1, kGroupAheadL1<T> ahead
  size_t l2_ahead;  // bytes ahead into L2
};
inline GroupPrefetch GroupPrefetchPlan() {
  static const GroupPrefetch plan = __builtin_cpu_is("amd") ? GroupPrefetch{false, 8192} : GroupPrefetch{true, 4096};
  return plan;
}
template <int Lines, size_t Ahead = kPrefetchAhead, int Hint = kIntoL1>
inline void Prefetch(const uint8_t* p) {
  for (int l = 0; l < Lines; ++l) __builtin_prefetch(p + Ahead + 64 * l, 0, Hint);
}
inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
// s[j] = the sum of a[j]'s 8 lanes for j < W (1, 2 or 4): W rows' sums share the shuffles.
template <int W>
inline void SumW(const __m256* a, float* s) {
  static_assert(W == 1 || W == 2 || W == 4);
  if constexpr (W == 1) {
    s[0] = Sum8(a[0]);
  } else if constexpr (W == 2) {
    const __m256 h = _mm256_hadd_ps(a[0], a[1]);  // per 128-bit lane: a0 pairs, a1 pairs
    const __m128 t = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    _mm_storel_pi(reinterpret_cast<__m64*>(s), _mm_hadd_ps(t, t));
  } else {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));  // lane j: a[j]'s quarter
    _mm_storeu_ps(s, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
  }
}
// 16 nibbles of 16 bytes -> 32 bytes: element j < 16 the low nibble of byte j, j + 16 its high nibble.
// The 16 bytes go to both 128-bit lanes in one load, the high lane shifted by 4 (a per-lane shift):
// three instructions where two half-width shifts and an insert took five.
inline __m256i Nibbles(const uint8_t* p) {
  const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0xf));
}

// Chunk codes times activation codes as 16 int16 pair sums: unsigned codes straight into maddubs
// (unsigned x signed), signed ones with |v| unsigned and v's sign moved onto q.
template <bool Signed>
inline __m256i Mul(__m256i v, __m256i q) {
  if constexpr (Signed) return _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(q, v));
  else return _mm256_maddubs_epi16(v, q);
}
// Codes times activation codes, summed in fours into 8 int32 lanes added to acc: one AVX512-VNNI
// vpdpbusd where the build targets it, else maddubs and madd (the pair sums stay below 2^15, see
// above, so both are exact and give the same integers).
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
constexpr bool kVnni = true;
#else
constexpr bool kVnni = false;
#endif
template <bool Signed>
inline __m256i Dot4(__m256i acc, __m256i v, __m256i q) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  if constexpr (Signed) return _mm256_dpbusd_epi32(acc, _mm256_sign_epi8(v, v), _mm256_sign_epi8(q, v));
  else return _mm256_dpbusd_epi32(acc, v, q);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(Mul<Signed>(v, q), _mm256_set1_epi16(1)));
#endif
}
// Bit j of the 32-bit word at p as byte j: 0x10 where set, else 0 (Q5_0/Q5_1's fifth bits).
inline __m256i FifthBits(const uint8_t* p) {
  uint32_t h;
  std::memcpy(&h, p, 4);
  const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(int(h)),  // byte j / 8 of h into byte j
                                            _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201));  // bit j % 8 in byte j
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit), _mm256_set1_epi8(0x10));
}
// IQ4_NL/IQ4_XS: 32 nibbles to their code values by a 16-entry byte shuffle; Biased: the values + 128
// as unsigned bytes (kBias).
template <bool Biased = false>
inline __m256i Iq4Values(__m256i nibbles) {
  alignas(16) static constexpr auto kBiased = [] {
    std::array<uint8_t, 16> b{};
    for (int i = 0; i < 16; ++i) b[size_t(i)] = uint8_t(kIq4NlValues[i] + 128);
    return b;
  }();
  const void* values = Biased ? static_cast<const void*>(kBiased.data()) : static_cast<const void*>(kIq4NlValues);
  const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(values)));
  return _mm256_shuffle_epi8(table, nibbles);
}

// The 32-element blocks' codes (signed for Q8_0 and IQ4_NL, else unsigned), scale d and the term m
// of x = d v + m (Q4_1/Q5_1 their min, Q4_0/Q5_0 their offset -8 d or -16 d, as DecodeQ8Terms).
template <DType T>
constexpr bool kSigned32 = T == DType::kQ8_0 || T == DType::kIQ4_NL;
template <DType T>
inline __m256i Codes32(const uint8_t* p, float* d, float* m) {
  *d = HalfInline(p);
  *m = T == DType::kQ4_1 || T == DType::kQ5_1 ? HalfInline(p + 2) : T == DType::kQ4_0 ? -8 * *d : -16 * *d;
  if constexpr (T == DType::kQ8_0) return Load32(p + 2);
  if constexpr (T == DType::kQ4_0) return Nibbles(p + 2);
  if constexpr (T == DType::kIQ4_NL) return Iq4Values(Nibbles(p + 2));
  if constexpr (T == DType::kQ4_1) return Nibbles(p + 4);
  if constexpr (T == DType::kQ5_0) return _mm256_or_si256(Nibbles(p + 6), FifthBits(p + 2));
  return _mm256_or_si256(Nibbles(p + 8), FifthBits(p + 4));  // Q5_1
}

// W weight rows (row_bytes apart) per call, one after the other: each row's bytes are read in order
// (interleaving the rows block by block decoded at 0.64-0.88x the speed end to end, where the
// weights stream from L3 or memory), and the rows share their horizontal sums (SumW), which at
// atp-40m's 2-48 blocks per row were a large part of a row's time.
//
// 32-element blocks: two accumulation chains per row at one activation row; the term m of the
// unsigned types adds m * (d_x * sum q) per block.
// bytes: of one block (DTypeBytes is out of line, so the caller computes it once per matrix).
template <int R, int W, DType T>
void Dot32(const uint8_t* w, size_t row_bytes, size_t bytes, int64_t in, const Q8Rows& x, float* y, int64_t out) {
  constexpr int K = R == 1 ? 2 : 1;
  constexpr bool kMin = !kSigned32<T>;
  const int64_t nb = in / 32;
  __m256 a[R][W];     // row j's accumulator, kept until the shared sums
  float mn[R][W] = {};  // and its min terms
  for (int j = 0; j < W; ++j) {
    __m256 acc[R][K];  // per row: registers, not memory, along the row
    float mins[R][K] = {};
    for (int r = 0; r < R; ++r)
      for (int k = 0; k < K; ++k) acc[r][k] = _mm256_setzero_ps();
    auto block = [&](int64_t b, int k) {
      float d, m;
      const uint8_t* p = w + size_t(j) * row_bytes + size_t(b) * bytes;
      Prefetch<1>(p);  // blocks of 18-34 bytes
      const __m256i v = Codes32<T>(p, &d, &m);
      for (int r = 0; r < R; ++r) {
        const int64_t i = r * x.blocks + b;
        const __m256i s = Dot4<kSigned32<T>>(_mm256_setzero_si256(), v, Load32(x.q + 32 * i));
        acc[r][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * x.d[i]), acc[r][k]);
        if constexpr (kMin) mins[r][k] += m * x.sum[i];
      }
    };
    int64_t b = 0;
    for (; b + K <= nb; b += K)
#pragma GCC unroll 2
      for (int k = 0; k < K; ++k) block(b + k, k);  // unrolled, so acc[r][k] stays in a register
    for (; b < nb; ++b) block(b, 0);
    for (int r = 0; r < R; ++r) {
      a[r][j] = acc[r][0];
      for (int k = 1; k < K; ++k) a[r][j] = _mm256_add_ps(a[r][j], acc[r][k]);
      for (int k = 0; k < K; ++k) mn[r][j] += mins[r][k];
    }
  }
  for (int r = 0; r < R; ++r) {
    float s[W];
    SumW<W>(a[r], s);
    for (int j = 0; j < W; ++j) y[r * out + j] = s[j] + mn[r][j];
  }
}

// Q4_K/Q5_K: the 8 six-bit scales (bytes 0..7) and mins (bytes 8..15) from a block's 12 scale bytes
// (layout in core/kquant.h), four sub-blocks at a time in 32-bit words.
inline __m128i ScalesMinsK4(const uint8_t* p) {
  uint32_t a, b, c;
  std::memcpy(&a, p, 4);
  std::memcpy(&b, p + 4, 4);
  std::memcpy(&c, p + 8, 4);
  const uint32_t six = 0x3f3f3f3f, four = 0x0f0f0f0f, two = 0x03030303;
  return _mm_setr_epi32(int(a & six), int((c & four) | ((a >> 6) & two) << 4),  // scales 0..3, 4..7
                        int(b & six), int(((c >> 4) & four) | ((b >> 6) & two) << 4));  // mins 0..3, 4..7
}
// Q3_K: its 16 signed scales as bytes, from the 12 scale bytes: low nibbles of bytes 0..7 (scales
// 0..7) and their high nibbles (8..15), plus 2 high bits of scale s at bits 2 (s / 4) of byte 8 + s % 4.
inline __m128i ScalesQ3(const uint8_t* p) {
  const __m128i lo = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), f = _mm_set1_epi8(0xf);
  const __m128i low4 = _mm_unpacklo_epi64(_mm_and_si128(lo, f), _mm_and_si128(_mm_srli_epi16(lo, 4), f));
  uint32_t h;
  std::memcpy(&h, p + 8, 4);
  const uint32_t two = 0x03030303;
  const __m128i high2 = _mm_setr_epi32(int(h & two), int((h >> 2) & two), int((h >> 4) & two), int((h >> 6) & two));
  return _mm_sub_epi8(_mm_or_si128(low4, _mm_slli_epi16(high2, 4)), _mm_set1_epi8(32));
}
// ScalesQ3 for 8 interleaved rows (their 12 scale bytes as 12 columns of 8 at p): scale s of row j
// to out[8 s + j], all 16 at once where decoding each sub-block's from its two columns took ~11
// instructions a sub-block and row group.
inline void ScalesQ3x8(const uint8_t* p, int8_t out[128]) {
  const __m256i a = Load32(p), b = Load32(p + 32), c = Load32(p + 64);  // columns 0..3, 4..7, 8..11
  const __m256i f = _mm256_set1_epi8(0xf), top = _mm256_set1_epi8(0x30), off = _mm256_set1_epi8(32);
  auto put = [&](int i, __m256i low4, __m256i high2) {  // scales 4i..4i+3: low 4 bits, then bits 4-5
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * i),
                        _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(low4, f), _mm256_and_si256(high2, top)), off));
  };
  put(0, a, _mm256_slli_epi16(c, 4));  // high bits 2 (s / 4) of column 8 + s % 4, moved to 4
  put(1, b, _mm256_slli_epi16(c, 2));
  put(2, _mm256_srli_epi16(a, 4), c);
  put(3, _mm256_srli_epi16(b, 4), _mm256_srli_epi16(c, 2));
}
// Q2_K/Q3_K/Q6_K: sub-block scales of half h (8 int16 per 128-bit lane) and, for chunk k of that
// half, its two halves' scales picked into the 16 pair sums' multipliers (words 2k and 2k + 1).
inline __m256i HalfScales(__m128i sc16x8) { return _mm256_broadcastsi128_si256(sc16x8); }
inline __m256i Pick(__m256i s16, int k) {
  return _mm256_shuffle_epi8(s16, _mm256_set_m128i(_mm_set1_epi16(int16_t((4 * k + 3) << 8 | (4 * k + 2))),
                                                   _mm_set1_epi16(int16_t((4 * k + 1) << 8 | 4 * k))));
}

// Super-blocks (k-quants, IQ4_XS): per chunk the integer dot times the sub-block scales (int16
// multipliers in madd), scaled by the activation d into a per-block accumulator that is scaled by
// the block's d once. The min terms of all 8 chunks are one or two vectors of mins against the
// activation sums (per chunk for Q4_K/Q5_K, per half for Q2_K, and for Q3_K/Q6_K whose offsets
// 4 and 32 are mins of 4 * scale and 32 * scale).
// W weight rows per call, one after the other, as Dot32.
template <int R, int W, DType T>
void DotK(const uint8_t* w, size_t row_bytes, size_t bytes, int64_t in, const Q8Rows& x, float* y, int64_t out) {
  constexpr int K = R == 1 ? 2 : 1;
  const int64_t nb = in / kSuperBlock;
  const __m256i low = _mm256_set1_epi8(0xf), three = _mm256_set1_epi8(3);
  __m256 a[R][W];  // row j's sum, kept until the shared sums
  for (int j = 0; j < W; ++j) {
    __m256 acc[R], mins[R];  // per row: registers, not memory, along the row
    for (int r = 0; r < R; ++r) acc[r] = mins[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* p = w + size_t(j) * row_bytes + size_t(b) * bytes;
      Prefetch<4>(p);  // super-blocks of 84-210 bytes
      __m256 sb[R][K];
      for (int r = 0; r < R; ++r)
        for (int k = 0; k < K; ++k) sb[r][k] = _mm256_setzero_ps();
      // Chunk k's codes v and the int16 multipliers of its 16 pair sums.
      auto use = [&](int k, __m256i v, __m256i scale) {
        for (int r = 0; r < R; ++r) {
          const int64_t i = r * x.blocks + 8 * b + k;
          const __m256 s = _mm256_cvtepi32_ps(_mm256_madd_epi16(Mul<T == DType::kIQ4_XS>(v, Load32(x.q + 32 * i)), scale));
          sb[r][k % K] = _mm256_fmadd_ps(s, _mm256_broadcast_ss(x.d + i), sb[r][k % K]);
        }
      };
      // Min terms: m[c] * (d_x * sum q) over the 8 chunks, or m0/m1 against the 16 halves.
      auto chunk_mins = [&](__m256 m) {
        for (int r = 0; r < R; ++r) mins[r] = _mm256_fmadd_ps(m, _mm256_loadu_ps(x.sum + r * x.blocks + 8 * b), mins[r]);
      };
      auto half_mins = [&](__m128i m8, float scale) {  // m8: 16 unsigned or signed bytes per kind
        const bool is_signed = T != DType::kQ2_K;
        const __m256i a = is_signed ? _mm256_cvtepi8_epi32(m8) : _mm256_cvtepu8_epi32(m8);
        const __m256i c = is_signed ? _mm256_cvtepi8_epi32(_mm_srli_si128(m8, 8)) : _mm256_cvtepu8_epi32(_mm_srli_si128(m8, 8));
        const __m256 m0 = _mm256_mul_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(a));
        const __m256 m1 = _mm256_mul_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(c));
        for (int r = 0; r < R; ++r) {
          const float* h = x.half + 2 * (r * x.blocks + 8 * b);
          mins[r] = _mm256_fmadd_ps(m1, _mm256_loadu_ps(h + 8), _mm256_fmadd_ps(m0, _mm256_loadu_ps(h), mins[r]));
        }
      };
      float d;
      if constexpr (T == DType::kQ4_K || T == DType::kQ5_K) {
        d = HalfInline(p);
        const __m128i sm = ScalesMinsK4(p + 4);
        chunk_mins(_mm256_mul_ps(_mm256_set1_ps(HalfInline(p + 2)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8)))));
        const __m256i s16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
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
            use(k, u, _mm256_shuffle_epi8(s16, _mm256_set1_epi16(int16_t((2 * k + 1) << 8 | 2 * k))));
          }
        }
      } else if constexpr (T == DType::kIQ4_XS) {
        d = HalfInline(p);
        const int sh = p[2] | p[3] << 8;
        for (int k = 0; k < 8; ++k) {
          const int ls = ((p[4 + k / 2] >> (4 * (k % 2))) & 0xf) | ((sh >> (2 * k)) & 3) << 4;
          use(k, Iq4Values(Nibbles(p + 8 + 16 * k)), _mm256_set1_epi16(int16_t(ls - 32)));
        }
      } else if constexpr (T == DType::kQ2_K) {
        d = HalfInline(p + 80);
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        const __m128i sc = _mm_and_si128(raw, _mm_set1_epi8(0xf));
        half_mins(_mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0xf)), HalfInline(p + 82));
        for (int h = 0; h < 2; ++h) {
          const __m256i s16 = HalfScales(_mm_cvtepu8_epi16(h ? _mm_srli_si128(sc, 8) : sc));
          const __m256i qs = Load32(p + 16 + 32 * h);
          for (int k = 0; k < 4; ++k) use(4 * h + k, _mm256_and_si256(_mm256_srli_epi16(qs, 2 * k), three), Pick(s16, k));
        }
      } else if constexpr (T == DType::kQ3_K) {
        d = HalfInline(p + 108);
        const __m128i sc = ScalesQ3(p + 96);
        half_mins(sc, 4 * d);
        const __m256i hm = Load32(p);
        for (int h = 0; h < 2; ++h) {
          const __m256i s16 = HalfScales(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc, 8) : sc));
          const __m256i qs = Load32(p + 32 + 32 * h);
          for (int k = 0; k < 4; ++k) {
            const __m256i low2 = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * k), three);
            const __m256i bit2 = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + k), _mm256_set1_epi8(1));
            use(4 * h + k, _mm256_or_si256(low2, _mm256_slli_epi16(bit2, 2)), Pick(s16, k));
          }
        }
      } else {  // Q6_K
        d = HalfInline(p + 208);
        const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 192));  // 16 int8 scales
        half_mins(sc, 32 * d);
        for (int h = 0; h < 2; ++h) {
          const __m256i s16 = HalfScales(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc, 8) : sc));
          const __m256i ql0 = Load32(p + 64 * h), ql1 = Load32(p + 64 * h + 32), qh = Load32(p + 128 + 32 * h);
          for (int k = 0; k < 4; ++k) {
            const __m256i ql = k % 2 ? ql1 : ql0;
            const __m256i lo = _mm256_and_si256(k < 2 ? ql : _mm256_srli_epi16(ql, 4), low);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), three);
            use(4 * h + k, _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), Pick(s16, k));
          }
        }
      }
      for (int r = 0; r < R; ++r) {
        for (int k = 1; k < K; ++k) sb[r][0] = _mm256_add_ps(sb[r][0], sb[r][k]);
        acc[r] = _mm256_fmadd_ps(sb[r][0], _mm256_set1_ps(d), acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) a[r][j] = _mm256_sub_ps(acc[r], mins[r]);
  }
  for (int r = 0; r < R; ++r) SumW<W>(a[r], y + r * out);
}

// The loop every interleaved kernel runs: each group of 8 rows in turn, its blocks (or super-blocks)
// of kBlockBytes front to back, each asked for `Lines` cache lines as the machine's GroupPrefetchPlan
// says (kGroupAheadL1<T> bytes ahead into L1, l2_ahead into L2), and R f32 accumulators of 8 lanes (one per activation
// row, lane j row j) to which block(p, b, acc) adds block b's terms; then the group's 8 outputs per
// activation row. The lambda inlines (a template argument), so the accumulators stay in registers.
template <int R, DType T, int64_t kBlockBytes, int Lines, typename Block>
inline void ForGroups(const uint8_t* w, int64_t groups, int64_t nb, float* y, int64_t out, Block block) {
  const GroupPrefetch plan = GroupPrefetchPlan();
  for (int64_t g = 0; g < groups; ++g) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    const uint8_t* p = w + g * nb * kBlockBytes;
    for (int64_t b = 0; b < nb; ++b, p += kBlockBytes) {
      if (plan.l1) Prefetch<Lines, kGroupAheadL1<T>, kIntoL1>(p);
      Prefetch<Lines, 0, kIntoL2>(p + plan.l2_ahead);
      block(p, b, acc);
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * out + 8 * g, acc[r]);
  }
}

// Byte k of each 32-bit lane: 0x10 where bit `shift` + k of the lane's byte `byte` is set (shift 0
// or 4, k < 4): 4 fifth bits of Q5_0/Q5_1 from each row's 32-bit qh (lane j: row j's).
inline __m256i LaneFifthBits(__m256i qh, int byte, int shift) {
  const __m256i pick = _mm256_add_epi8(_mm256_set1_epi8(char(byte)),  // byte `byte` of each lane into its 4 bytes
                                       _mm256_setr_epi32(0, 0x04040404, 0x08080808, 0x0c0c0c0c, 0, 0x04040404,
                                                         0x08080808, 0x0c0c0c0c));
  const __m256i bit = _mm256_set1_epi32(int(0x08040201u << shift));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(qh, pick), bit), bit),
                          _mm256_set1_epi8(0x10));
}

// Scale byte i of 8 interleaved rows at p (8 consecutive bytes), one per 32-bit lane: the scale
// columns of Q2_K..Q6_K and IQ4_XS. Signed for Q6_K's int8 scales.
template <bool Signed = false>
inline __m256i ByteColumn(const uint8_t* p) {
  const __m128i c = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return Signed ? _mm256_cvtepi8_epi32(c) : _mm256_cvtepu8_epi32(c);
}

// The group kernels' signed codes (Q8_0, IQ4_NL and through it IQ4_XS) with AVX512-VNNI: shifted by 128 into
// unsigned bytes, which vpdpbusd (unsigned x signed) takes as they are, the shift coming off as
// -128 d_x sum q per activation block (the way Q4_0's offset 8 does), where the sign trick (Mul)
// cost two vpsignb per unit and activation row: IQ4_XS's prefill spent 12% of its cycles in them.
// The AVX2 path keeps the sign trick: maddubs would saturate (2 * 241 * 127 > 2^15).
template <DType T>
constexpr int kBias = kVnni && (T == DType::kQ8_0 || T == DType::kIQ4_NL) ? 128 : 0;

// The 32 codes of one 32-element block of 8 interleaved rows in 4 nibble units at `codes` (low
// nibbles elements 4u..4u+3, high ones 16 + 4u..; with T's fifth bits from the rows' qh words at qh,
// or T's value table) against activation block `blk` of each of R rows, added to s[r] lane by lane.
// Q4_0's and Q4_1's AVX2 path sums in int16 (see DotGroups), the others in int32 (Dot4).
template <int R, DType T>
inline void NibbleDots(const uint8_t* codes, const uint8_t* qh, const Q8Rows& x, int64_t blk, __m256i* s) {
  constexpr bool kFive = T == DType::kQ5_0 || T == DType::kQ5_1;
  constexpr bool kInt16 = !kVnni && (T == DType::kQ4_0 || T == DType::kQ4_1);
  constexpr bool kSigned = kSigned32<T> && kBias<T> == 0;
  const __m256i low = _mm256_set1_epi8(0xf);
#pragma GCC unroll 4
  for (int u = 0; u < 4; ++u) {
    const __m256i v = Load32(codes + 32 * u);
    __m256i lo = _mm256_and_si256(v, low), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    if constexpr (kFive) {
      const __m256i h = Load32(qh);  // elements 4u.. in byte u / 2, 16 + 4u.. in byte 2 + u / 2
      lo = _mm256_or_si256(lo, LaneFifthBits(h, u / 2, 4 * (u % 2)));
      hi = _mm256_or_si256(hi, LaneFifthBits(h, 2 + u / 2, 4 * (u % 2)));
    }
    if constexpr (T == DType::kIQ4_NL) lo = Iq4Values<kBias<T> != 0>(lo), hi = Iq4Values<kBias<T> != 0>(hi);
    for (int r = 0; r < R; ++r) {
      const int8_t* q = x.q + 32 * (r * x.blocks + blk);
      if constexpr (kInt16)
        s[r] = _mm256_add_epi16(s[r], _mm256_add_epi16(_mm256_maddubs_epi16(lo, Code4(q + 4 * u)),
                                                       _mm256_maddubs_epi16(hi, Code4(q + 16 + 4 * u))));
      else
        s[r] = Dot4<kSigned>(Dot4<kSigned>(s[r], lo, Code4(q + 4 * u)), hi, Code4(q + 16 + 4 * u));
    }
  }
}

// Interleaved groups of 8 rows (core/interleave.h): per block, lane j of a code vector holds 4 codes
// of row j, and the activation's 4 matching codes are broadcast to every lane, so maddubs + madd
// leave row j's partial dot in lane j. The 4-bit types: a 32-byte unit vector holds elements
// 4u..4u+3 in its low nibbles and 16 + 4u.. in its high ones; Q5_0/Q5_1 add their fifth bits from
// the 8 rows' qh words (LaneFifthBits), IQ4_NL maps nibbles to its signed values (Iq4Values). Q4_0's
// and Q4_1's 8 products of a block add up in int16 on the AVX2 path (each pair at most 2 * 15 * 127,
// so eight stay below 2^15); the others' codes reach 31 or 127, so each unit widens to int32 (Dot4,
// as with VNNI). Q8_0 and IQ4_NL: signed codes, biased by 128 with VNNI (kBias), else the sign
// moved onto q (Mul). The offsets 8 (Q4_0), 16 (Q5_0) and the bias 128 come off as offset d_x sum q,
// the mins of Q4_1/Q5_1 add m_w d_x sum q.
// R activation rows (1..8, kRowsPerPass: about as many accumulators as registers allow).
template <int R, DType T>
void DotGroups(const uint8_t* w, int64_t groups, int64_t in, const Q8Rows& x, float* y, int64_t out) {
  constexpr bool kMin = T == DType::kQ4_1 || T == DType::kQ5_1;
  constexpr bool kInt16 = !kVnni && (T == DType::kQ4_0 || T == DType::kQ4_1);
  constexpr float kOffset = T == DType::kQ4_0 ? -8.f : T == DType::kQ5_0 ? -16.f : -float(kBias<T>);
  // Bytes of one row's block, and where the 8 rows' qh words and codes start in the group's block.
  constexpr int64_t kRowBlock = T == DType::kQ8_0 ? 34 : T == DType::kQ4_1 ? 20 : T == DType::kQ5_0 ? 22
                              : T == DType::kQ5_1 ? 24 : 18;
  constexpr int64_t kBlockBytes = 8 * kRowBlock, kQh = kMin ? 32 : 16, kCodes = 8 * kRowBlock - 128 * (T == DType::kQ8_0 ? 2 : 1);
  const int64_t nb = in / 32;
  const __m256i ones = _mm256_set1_epi16(1);
  auto block = [&](const uint8_t* p, int64_t b, __m256* acc) {  // block b of a group at p
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    __m256i s[R];
    for (int r = 0; r < R; ++r) s[r] = _mm256_setzero_si256();
    if constexpr (T == DType::kQ8_0) {
#pragma GCC unroll 8
      for (int u = 0; u < 8; ++u) {
        const __m256i codes = Load32(p + kCodes + 32 * u);
        const __m256i v = kBias<T> ? _mm256_xor_si256(codes, _mm256_set1_epi8(char(0x80))) : codes;  // + 128
        for (int r = 0; r < R; ++r)
          s[r] = Dot4<kBias<T> == 0>(s[r], v, Code4(x.q + 32 * (r * x.blocks + b) + 4 * u));
      }
    } else {
      NibbleDots<R, T>(p + kCodes, p + kQh, x, b, s);
    }
    const __m256 mw = kMin ? _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))) : __m256{};
    for (int r = 0; r < R; ++r) {
      const int64_t i = r * x.blocks + b;
      const __m256 dot = _mm256_cvtepi32_ps(kInt16 ? _mm256_madd_epi16(s[r], ones) : s[r]);
      // d_w (d_x S + offset d_x sum q), + m_w d_x sum q with a min.
      const __m256 t = _mm256_fmadd_ps(dot, _mm256_set1_ps(x.d[i]), _mm256_set1_ps(kOffset * x.sum[i]));
      acc[r] = _mm256_fmadd_ps(dw, t, acc[r]);
      if constexpr (kMin) acc[r] = _mm256_fmadd_ps(mw, _mm256_set1_ps(x.sum[i]), acc[r]);
    }
  };
  ForGroups<R, T, kBlockBytes, (kBlockBytes + 63) / 64>(w, groups, nb, y, out, block);
}

// Rows of W weight rows per pass (W = 4 at one activation row, 2 at two, else 1: about as many
// accumulators as registers allow), the rest one at a time.
template <int R>
void DotRows(DType t, const uint8_t* w, int64_t n_out, int64_t in, const Q8Rows& x, float* y, int64_t out) {
  constexpr int W = R == 1 ? 4 : R == 2 ? 2 : 1;
  const size_t rb = DTypeBytes(t, in), bytes = DTypeBytes(t, DTypeBlockElems(t));
  auto each = [&](auto wide, auto one) {
    int64_t o = 0;
    for (; o + W <= n_out; o += W) wide(w + size_t(o) * rb, rb, bytes, in, x, y + o, out);
    for (; o < n_out; ++o) one(w + size_t(o) * rb, rb, bytes, in, x, y + o, out);
  };
  switch (t) {
#define ATP_Q8_CASE(T, KERNEL) \
    case T: return each(KERNEL<R, W, T>, KERNEL<R, 1, T>);
    ATP_Q8_CASE(DType::kQ8_0, Dot32)
    ATP_Q8_CASE(DType::kQ4_0, Dot32)
    ATP_Q8_CASE(DType::kQ4_1, Dot32)
    ATP_Q8_CASE(DType::kQ5_0, Dot32)
    ATP_Q8_CASE(DType::kQ5_1, Dot32)
    ATP_Q8_CASE(DType::kIQ4_NL, Dot32)
    ATP_Q8_CASE(DType::kQ2_K, DotK)
    ATP_Q8_CASE(DType::kQ3_K, DotK)
    ATP_Q8_CASE(DType::kQ4_K, DotK)
    ATP_Q8_CASE(DType::kQ5_K, DotK)
    ATP_Q8_CASE(DType::kQ6_K, DotK)
    ATP_Q8_CASE(DType::kIQ4_XS, DotK)
#undef ATP_Q8_CASE
    default: std::abort();  // HasQ8Dot(t) is the caller's contract
  }
}

// Q4_K and Q5_K in interleaved groups: per super-block, the 8 rows' d and dmin convert at once; the
// scale bytes sit as 8-row columns (byte i of every row in 8 bytes), so each of the 8 sub-block scales
// and mins is a few integer operations on 8 lanes (ggml's get_scale_min_k4, lane by lane); the codes
// of sub-blocks 2p and 2p + 1 are the low and high nibbles of the same 8 units, and Q5_K's fifth bits
// are bits 2p and 2p + 1 of the matching qh unit. A sub-block's integer dot (32 products per lane, at
// most 32 * 31 * 127 < 2^17; the AVX2 path sums maddubs pair sums in int16 before a madd widens
// them: Q4_K's eight units, 16 products of at most 15 * 127, below 2^15; Q5_K's four at a time, 8
// of at most 31 * 127 = 31496) times its scale, times the
// activation's d, sums into a float accumulator per super-block that d scales once; the mins
// against the activation sums likewise.
template <int R, bool kFive>
void DotGroupsK4(const uint8_t* w, int64_t groups, int64_t in, const Q8Rows& x, float* y, int64_t out) {
  constexpr int64_t kBlockBytes = 8 * (kFive ? 176 : 144), kCodes = 8 * (kFive ? 48 : 16);
  constexpr int kFold = kFive ? 4 : 8;  // AVX2: units summed in int16 before they widen to int32
  const int64_t nb = in / kSuperBlock;
  const __m256i low = _mm256_set1_epi8(0xf), six = _mm256_set1_epi32(63), four = _mm256_set1_epi32(15);
  auto block = [&](const uint8_t* p, int64_t b, __m256* acc) {  // block b of a group at p
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)));
    auto column = [&](int i) { return ByteColumn(p + 32 + 8 * i); };  // scale byte i of the 8 rows
    __m256 sb[R], mins[R];
    for (int r = 0; r < R; ++r) sb[r] = mins[r] = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int pair = 0; pair < 4; ++pair) {
      __m256i s[R][2], s16[R][2];  // int32 sums; AVX2: int16 sums of the units since the last fold
      for (int r = 0; r < R; ++r) s[r][0] = s[r][1] = _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int u = 0; u < 8; ++u) {
        const __m256i v = Load32(p + kCodes + 32 * (8 * pair + u));
        __m256i lo = _mm256_and_si256(v, low), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
        if constexpr (kFive) {
          const __m256i qh = Load32(p + 8 * 16 + 32 * u), one = _mm256_set1_epi8(1);
          lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * pair), one), 4));
          hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * pair + 1), one), 4));
        }
        for (int r = 0; r < R; ++r) {
          const int8_t* q = x.q + 32 * (r * x.blocks + 8 * b + 2 * pair) + 4 * u;
          if constexpr (kVnni) {
            s[r][0] = Dot4<false>(s[r][0], lo, Code4(q));
            s[r][1] = Dot4<false>(s[r][1], hi, Code4(q + 32));
          } else {
            const __m256i a = _mm256_maddubs_epi16(lo, Code4(q)), c = _mm256_maddubs_epi16(hi, Code4(q + 32));
            s16[r][0] = u % kFold == 0 ? a : _mm256_add_epi16(s16[r][0], a);
            s16[r][1] = u % kFold == 0 ? c : _mm256_add_epi16(s16[r][1], c);
            if (u % kFold == kFold - 1)
              for (int h = 0; h < 2; ++h) s[r][h] = _mm256_add_epi32(s[r][h], _mm256_madd_epi16(s16[r][h], _mm256_set1_epi16(1)));
          }
        }
      }
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const int k = 2 * pair + h;
        __m256i sc, m;
        if (k < 4) {
          sc = _mm256_and_si256(column(k), six);
          m = _mm256_and_si256(column(k + 4), six);
        } else {
          const __m256i c = column(k + 4);
          sc = _mm256_or_si256(_mm256_and_si256(c, four), _mm256_slli_epi32(_mm256_srli_epi32(column(k - 4), 6), 4));
          m = _mm256_or_si256(_mm256_srli_epi32(c, 4), _mm256_slli_epi32(_mm256_srli_epi32(column(k), 6), 4));
        }
        const __m256 scf = _mm256_cvtepi32_ps(sc), mf = _mm256_cvtepi32_ps(m);
        for (int r = 0; r < R; ++r) {
          const int64_t i = r * x.blocks + 8 * b + k;
          sb[r] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s[r][h]), scf), _mm256_set1_ps(x.d[i]), sb[r]);
          mins[r] = _mm256_fmadd_ps(mf, _mm256_set1_ps(x.sum[i]), mins[r]);
        }
      }
    }
    for (int r = 0; r < R; ++r) acc[r] = _mm256_fnmadd_ps(dmin, mins[r], _mm256_fmadd_ps(d, sb[r], acc[r]));
  };
  ForGroups<R, kFive ? DType::kQ5_K : DType::kQ4_K, kBlockBytes, kBlockBytes / 64>(w, groups, nb, y, out, block);
}

// Q2_K, Q3_K and Q6_K in interleaved groups: element 128 h + 32 k + l of a super-block is chunk 4 h + k,
// its scale changes every 16 elements (sub-block 8 h + 2 k + l / 16), so each chunk's dot is summed
// per half (units 0..3 and 4..7 of l = 4u..4u+3), and the two halves' sums times their scales add up
// in int32 before the chunk's one conversion to float (each half's at most 16 products: Q2_K's and
// Q3_K's below 2^15, so one madd with the scale as the low int16 of its lane multiplies them; Q6_K's
// reach 2^17 and take mullo); offsets and mins are mins against the half's activation sum. The codes
// of all 4 chunks at l = 4u..4u+3 come from the same few units:
// - Q2_K (scales, qs, d, dmin): 2-bit field k of qs unit 8 h + u; scale byte = scale | min << 4,
//   x = d scale q - dmin min.
// - Q3_K (hmask, qs, scales, d): Q2_K's low bits, bit 2 from bit 4 h + k of hmask unit u; 16 6-bit
//   scales stored + 32 in 12 bytes (core/kquant.h), all decoded first (ScalesQ3x8); x = d scale
//   (q - 4), the offset a min of 4 scale.
// - Q6_K (ql, qh, scales, d): low 4 bits from nibble k / 2 of ql unit 16 h + 8 (k % 2) + u, top 2
//   from bits 2k of qh unit 8 h + u; int8 scales, x = d scale (q - 32).
// Codes reach 3, 7 and 63. The AVX2 path sums Q2_K's and Q3_K's maddubs of a half in int16 (each pair
// sum at most 2 * 7 * 127, four units' 7112 < 2^15) and multiplies by the scale in the same madd that
// widens them (the scale in both int16 halves of its lane); Q6_K's pairs reach 2 * 63 * 127, so it
// widens each maddubs to int32 (Dot4). The loops unroll
// fully (the pragmas): rolled, GCC kept the sub-block index in a register and the accumulators moving
// between registers, and Q3_K's GEMV at 8192 x 2048 (in L3) ran at 10.8 GB/s of weights, unrolled 16.8.
template <int R, DType T>
void DotGroupsHalves(const uint8_t* w, int64_t groups, int64_t in, const Q8Rows& x, float* y, int64_t out) {
  constexpr bool kQ2 = T == DType::kQ2_K, kQ3 = T == DType::kQ3_K;
  constexpr int64_t kBlockBytes = 8 * (kQ2 ? 84 : kQ3 ? 110 : 210);
  // Where the group's fields start (8 times ggml's offsets).
  constexpr int64_t kQs = kQ2 ? 128 : kQ3 ? 256 : 0, kHigh = kQ3 ? 0 : 8 * 128, kScales = kQ2 ? 0 : kQ3 ? 768 : 8 * 192;
  constexpr int64_t kD = kQ2 ? 640 : kQ3 ? 864 : 8 * 208;
  const int64_t nb = in / kSuperBlock;
  // With VNNI (vpdpbusd takes unsigned bytes up to 255) Q2_K's and Q3_K's field k stays in place, its
  // codes times 4^e (e = exp(k): Q3_K's codes reach 7, so its field 3 moves to e = 2), which saves a
  // shift per field and unit; each half's sum comes back down by 4^e before its scale. AVX2's maddubs
  // would saturate (2 * 192 * 127 > 2^15).
  auto exp = [](int k) { return !kVnni || !(kQ2 || kQ3) ? 0 : kQ3 && k == 3 ? 2 : k; };
  constexpr bool kInt16 = !kVnni && (kQ2 || kQ3);
  const __m256i low = _mm256_set1_epi8(0xf), top = _mm256_set1_epi8(0x30), low16 = _mm256_set1_epi32(0xffff);
  auto block = [&](const uint8_t* p, int64_t b, __m256* acc) {  // block b of a group at p
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + kD)));
    auto column = [&](int i) { return ByteColumn<T == DType::kQ6_K>(p + kScales + 8 * i); };  // scale byte i
    alignas(32) int8_t sc3[kQ3 ? 128 : 1];  // Q3_K: the 16 scales of the 8 rows (ScalesQ3x8)
    if constexpr (kQ3) ScalesQ3x8(p + kScales, sc3);
    __m256 sb[R], mins[R];
    for (int r = 0; r < R; ++r) sb[r] = mins[r] = _mm256_setzero_ps();
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m256i t[R][4];  // per chunk: the scaled sums of its halves so far
#pragma GCC unroll 2
      for (int half = 0; half < 2; ++half) {
        __m256i s[R][4];
        for (int r = 0; r < R; ++r)
          for (int k = 0; k < 4; ++k) s[r][k] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int u = 4 * half; u < 4 * half + 4; ++u) {
          __m256i v[4];
          if constexpr (T == DType::kQ6_K) {
            const __m256i l0 = Load32(p + kQs + 32 * (16 * h + u)), l1 = Load32(p + kQs + 32 * (16 * h + 8 + u));
            const __m256i hb = Load32(p + kHigh + 32 * (8 * h + u));
            v[0] = _mm256_or_si256(_mm256_and_si256(l0, low), _mm256_and_si256(_mm256_slli_epi16(hb, 4), top));
            v[1] = _mm256_or_si256(_mm256_and_si256(l1, low), _mm256_and_si256(_mm256_slli_epi16(hb, 2), top));
            v[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low), _mm256_and_si256(hb, top));
            v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low),
                                   _mm256_and_si256(_mm256_srli_epi16(hb, 2), top));
          } else {
            const __m256i qs = Load32(p + kQs + 32 * (8 * h + u));
            for (int k = 0; k < 4; ++k)  // field k times 4^e: bits 2k, 2k + 1 to 2e, 2e + 1
              v[k] = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * (k - exp(k))), _mm256_set1_epi8(char(3 << 2 * exp(k))));
            if constexpr (kQ3) {
              const __m256i hm = Load32(p + kHigh + 32 * u);
              for (int k = 0; k < 4; ++k) {  // bit 4 h + k of each byte to bit 2e + 2
                const int sh = 4 * h + k - 2 * exp(k) - 2;
                const __m256i moved = sh >= 0 ? _mm256_srli_epi16(hm, sh) : _mm256_slli_epi16(hm, -sh);
                v[k] = _mm256_or_si256(v[k], _mm256_and_si256(moved, _mm256_set1_epi8(char(4 << 2 * exp(k)))));
              }
            }
          }
          for (int r = 0; r < R; ++r) {
            const int8_t* q = x.q + 32 * (r * x.blocks + 8 * b + 4 * h) + 4 * u;
            for (int k = 0; k < 4; ++k)
              s[r][k] = kInt16 ? _mm256_add_epi16(s[r][k], _mm256_maddubs_epi16(v[k], Code4(q + 32 * k)))
                               : Dot4<false>(s[r][k], v[k], Code4(q + 32 * k));
          }
        }
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          const int sc = 8 * h + 2 * k + half;  // the sub-block of these 16 elements
          __m256i scale, min;
          if constexpr (kQ2) {
            const __m256i c = column(sc);
            scale = _mm256_and_si256(c, _mm256_set1_epi32(15)), min = _mm256_srli_epi32(c, 4);
          } else if constexpr (kQ3) {
            min = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc3 + 8 * sc)));
            scale = _mm256_and_si256(min, low16);  // madd's multiplier: the low int16, a zero high one
          } else {
            scale = min = column(sc);
          }
          const __m256 mf = _mm256_cvtepi32_ps(min);
          // int16 sums (kInt16): both halves of a lane times the scale (its high half is 0 so far).
          if constexpr (kInt16) scale = _mm256_or_si256(scale, _mm256_slli_epi32(scale, 16));
          for (int r = 0; r < R; ++r) {
            const int64_t i = r * x.blocks + 8 * b + 4 * h + k;
            const __m256i sum = exp(k) ? _mm256_srai_epi32(s[r][k], 2 * exp(k)) : s[r][k];  // exact: 4^e divides it
            const __m256i scaled = T == DType::kQ6_K ? _mm256_mullo_epi32(sum, scale) : _mm256_madd_epi16(sum, scale);
            t[r][k] = half == 0 ? scaled : _mm256_add_epi32(t[r][k], scaled);
            mins[r] = _mm256_fmadd_ps(mf, _mm256_set1_ps(x.half[2 * i + half]), mins[r]);
            if (half == 1) sb[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t[r][k]), _mm256_set1_ps(x.d[i]), sb[r]);
          }
        }
      }
    }
    if constexpr (kQ2) {
      const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + kD + 16)));
      for (int r = 0; r < R; ++r) acc[r] = _mm256_fnmadd_ps(dmin, mins[r], _mm256_fmadd_ps(d, sb[r], acc[r]));
    } else {
      const __m256 offset = _mm256_set1_ps(kQ3 ? 4.f : 32.f);
      for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(d, _mm256_fnmadd_ps(offset, mins[r], sb[r]), acc[r]);
    }
  };
  ForGroups<R, T, kBlockBytes, kBlockBytes / 64 + 1>(w, groups, nb, y, out, block);
}

// IQ4_XS in interleaved groups (ggml's fields: d, scales_h, scales_l[4], qs[128]): sub-block k's codes
// are the 4 units 4k..4k+3 of qs, as IQ4_NL's 4 units of a block (low nibbles elements 4u.., high
// 16 + 4u..), mapped to IQ4_NL's values (Iq4Values; + 128 with VNNI, kBias, the bias off per
// sub-block as -128 d_x sum q); its 6-bit scale (stored + 32) is nibble k % 2 of scales_l[k / 2] and
// bits 2k of scales_h, decoded for 8 rows in 8 lanes. A sub-block's 32 products per lane reach
// 32 * 241 * 127 < 2^20 (Dot4).
template <int R>
void DotGroupsIq4Xs(const uint8_t* w, int64_t groups, int64_t in, const Q8Rows& x, float* y, int64_t out) {
  constexpr int64_t kBlockBytes = 8 * 136, kCodes = 8 * 8;
  const int64_t nb = in / kSuperBlock;
  const __m256i four = _mm256_set1_epi32(15), two = _mm256_set1_epi32(3);
  auto block = [&](const uint8_t* p, int64_t b, __m256* acc) {  // block b of a group at p
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m256i high = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)));
    __m256 sb[R];
    for (int r = 0; r < R; ++r) sb[r] = _mm256_setzero_ps();
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {
      __m256i s[R];
      for (int r = 0; r < R; ++r) s[r] = _mm256_setzero_si256();
      NibbleDots<R, DType::kIQ4_NL>(p + kCodes + 128 * k, nullptr, x, 8 * b + k, s);
      const __m256i lo4 = _mm256_and_si256(_mm256_srli_epi32(ByteColumn(p + 32 + 8 * (k / 2)), 4 * (k % 2)), four);
      const __m256i scale = _mm256_sub_epi32(
          _mm256_or_si256(lo4, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(high, 2 * k), two), 4)),
          _mm256_set1_epi32(32));
      const __m256 scf = _mm256_cvtepi32_ps(scale);
      for (int r = 0; r < R; ++r) {
        const int64_t i = r * x.blocks + 8 * b + k;
        // The sub-block's d_x sum v q, less the bias as DotGroups takes its offsets off (0 without VNNI).
        const __m256 t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[r]), _mm256_set1_ps(x.d[i]),
                                         _mm256_set1_ps(-float(kBias<DType::kIQ4_NL>) * x.sum[i]));
        sb[r] = _mm256_fmadd_ps(t, scf, sb[r]);
      }
    }
    for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(d, sb[r], acc[r]);
  };
  ForGroups<R, DType::kIQ4_XS, kBlockBytes, kBlockBytes / 64 + 1>(w, groups, nb, y, out, block);
}

template <int R, DType T>
void DotGroupsOf(const uint8_t* w, int64_t groups, int64_t in, const Q8Rows& x, float* y, int64_t out) {
  if constexpr (T == DType::kQ4_K || T == DType::kQ5_K) DotGroupsK4<R, T == DType::kQ5_K>(w, groups, in, x, y, out);
  else if constexpr (T == DType::kQ2_K || T == DType::kQ3_K || T == DType::kQ6_K) DotGroupsHalves<R, T>(w, groups, in, x, y, out);
  else if constexpr (T == DType::kIQ4_XS) DotGroupsIq4Xs<R>(w, groups, in, x, y, out);
  else DotGroups<R, T>(w, groups, in, x, y, out);
}

// Activation rows per pass over a group's weights: 4, or 8 for IQ4_XS where the build has AVX-512's 32
// vector registers (its 3 accumulators per row then fit, and each unit's nibbles and table lookups
// serve twice the rows: prefill of 512 tokens on the llama-3.2-1b shape's IQ4_XS file 1.02-1.09x as
// fast as with 4, alternated twice on this session's Xeon).
template <DType T>
constexpr int kRowsPerPass = kVnni && T == DType::kIQ4_XS ? 8 : 4;

template <DType T>
void DotGroupRows(const uint8_t* w, int64_t groups, int64_t in, const Q8Rows& x, int rows, float* y, int64_t out) {
  constexpr int kR = kRowsPerPass<T>;
  for (int r0 = 0; r0 < rows; r0 += kR) {
    const Q8Rows xr = x.From(r0);
    float* yr = y + r0 * out;
    switch (std::min(kR, rows - r0)) {
      case 1: DotGroupsOf<1, T>(w, groups, in, xr, yr, out); break;
      case 2: DotGroupsOf<2, T>(w, groups, in, xr, yr, out); break;
      case 3: DotGroupsOf<3, T>(w, groups, in, xr, yr, out); break;
      case 4: DotGroupsOf<4, T>(w, groups, in, xr, yr, out); break;
      default:
        if constexpr (kR == 8) {
          switch (rows - r0) {
            case 5: DotGroupsOf<5, T>(w, groups, in, xr, yr, out); break;
            case 6: DotGroupsOf<6, T>(w, groups, in, xr, yr, out); break;
            case 7: DotGroupsOf<7, T>(w, groups, in, xr, yr, out); break;
            default: DotGroupsOf<8, T>(w, groups, in, xr, yr, out); break;
          }
        }
        break;
    }
  }
}

}  // namespace

void DotRowQ8(DType t, const uint8_t* w, int64_t n_out, int64_t in, const Q8Rows& x, int rows, float* y, int64_t out) {
  switch (rows) {
    case 1: return DotRows<1>(t, w, n_out, in, x, y, out);
    case 2: return DotRows<2>(t, w, n_out, in, x, y, out);
    case 3: return DotRows<3>(t, w, n_out, in, x, y, out);
    case 4: return DotRows<4>(t, w, n_out, in, x, y, out);
    case 5: return DotRows<5>(t, w, n_out, in, x, y, out);
    case 6: return DotRows<6>(t, w, n_out, in, x, y, out);
    case 7: return DotRows<7>(t, w, n_out, in, x, y, out);
    default: return DotRows<8>(t, w, n_out, in, x, y, out);
  }
}

void DotRowsQ8x8(DType t, const uint8_t* w, int64_t groups, int64_t in, const Q8Rows& x, int rows, float* y, int64_t out) {
  switch (t) {
#define ATP_GROUP_CASE(T) \
    case T: return DotGroupRows<T>(w, groups, in, x, rows, y, out);
    ATP_GROUP_CASE(DType::kQ8_0)
    ATP_GROUP_CASE(DType::kQ4_0)
    ATP_GROUP_CASE(DType::kQ4_1)
    ATP_GROUP_CASE(DType::kQ5_0)
    ATP_GROUP_CASE(DType::kQ5_1)
    ATP_GROUP_CASE(DType::kIQ4_NL)
    ATP_GROUP_CASE(DType::kQ2_K)
    ATP_GROUP_CASE(DType::kQ3_K)
    ATP_GROUP_CASE(DType::kQ4_K)
    ATP_GROUP_CASE(DType::kQ5_K)
    ATP_GROUP_CASE(DType::kQ6_K)
    ATP_GROUP_CASE(DType::kIQ4_XS)
#undef ATP_GROUP_CASE
    default: std::abort();  // CanInterleave(t) is the caller's contract
  }
}
#else
void DotRowQ8(DType t, const uint8_t* w, int64_t n_out, int64_t in, const Q8Rows& x, int rows, float* y, int64_t out) {
  DotRowQ8Ref(t, w, n_out, in, x, rows, y, out);
}
// Each group back to 8 rows in ggml's layout, then the scalar reference.
void DotRowsQ8x8(DType t, const uint8_t* w, int64_t groups, int64_t in, const Q8Rows& x, int rows, float* y, int64_t out) {
  const size_t row_bytes = DTypeBytes(t, in);
  std::vector<uint8_t> plain(kInterleaveRows * row_bytes);
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* group = w + size_t(g * kInterleaveRows) * row_bytes;
    for (int j = 0; j < kInterleaveRows; ++j) PlainRow(t, group, in, j, plain.data() + size_t(j) * row_bytes);
    DotRowQ8Ref(t, plain.data(), kInterleaveRows, in, x, rows, y + g * kInterleaveRows, out);
  }
}
#endif

}  // namespace atp
