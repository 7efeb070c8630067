#include "core/kquant.h"

#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/quant.h"

// The equality with ggml's reference (same bytes from the quantizers, same floats from the
// dequantizers) holds only without contraction of a * b + c into one rounding.
#if defined(__FP_FAST_FMAF) && !defined(ATP_QUANT_CONTRACT_OFF)
#error "core/kquant.cpp must be compiled with -ffp-contract=off and -DATP_QUANT_CONTRACT_OFF (see CMakeLists.txt)"
#endif

namespace atp {

namespace {

constexpr float kGroupMaxEps = 1e-15f;  // ggml's GROUP_MAX_EPS: a group below this is all zero

float H(const uint8_t* p) {  // the f16 at p
  uint16_t h;
  std::memcpy(&h, p, 2);
  return F16ToF32(h);
}
void PutH(uint8_t* p, float v) {
  const uint16_t h = F32ToF16(v);
  std::memcpy(p, &h, 2);
}

// Round to nearest, ties to even, through the float adder (ggml's nearest_int): exact for
// |v| <= 2^22, which the callers' ranges keep to.
int NearestInt(float v) {
  const float f = v + 12582912.f;
  int i;
  std::memcpy(&i, &f, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// 1 / d, or 0 where d is 0 or subnormal (ggml: d ? 1/d : 0). A subnormal d is 0 once stored as f16,
// and its infinite inverse would turn codes into NaN; see InverseScale in core/quant.cpp.
float Inverse(float d) { return std::isnormal(d) ? 1 / d : 0; }

// 8 codes (int32 lanes) -> scale * code - min as ggml computes it: a product, then a difference,
// each rounded once (no fused multiply-add).
inline void StoreScaled8(float* y, __m256i code, __m256 scale, __m256 min) {
  _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(code)), min));
}
inline __m256i Bytes8(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }

// The IQ4 table value of 8 codes (0..15) as f32: two 8-entry permutes, picked by bit 3.
inline __m256 Iq4Values8(__m256i code) {
  auto half = [](int from) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(kIq4NlValues + from))));
  };
  const __m256 lo = half(0), hi = half(8);
  const __m256 upper = _mm256_castsi256_ps(_mm256_cmpgt_epi32(code, _mm256_set1_epi32(7)));
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, code), _mm256_permutevar8x32_ps(hi, code), upper);
}

// ---- 32-element blocks --------------------------------------------------------------------------

// Low nibbles of qs give elements 0..15, high nibbles 16..31 (Q4_1, Q5_x, IQ4_NL).
int Nibble(const uint8_t* qs, int j) { return j < 16 ? qs[j] & 0xf : qs[j - 16] >> 4; }

void DequantQ4_1(const uint8_t* b, float* y) {
  const float d = H(b), m = H(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = float(Nibble(b + 4, j)) * d + m;
}
void DequantQ5_0(const uint8_t* b, float* y) {
  const float d = H(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  for (int j = 0; j < 32; ++j) y[j] = float((Nibble(b + 6, j) | int(qh >> j & 1) << 4) - 16) * d;
}
void DequantQ5_1(const uint8_t* b, float* y) {
  const float d = H(b), m = H(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  for (int j = 0; j < 32; ++j) y[j] = float(Nibble(b + 8, j) | int(qh >> j & 1) << 4) * d + m;
}
// IQ4 codes of 32 elements at qs (low nibbles first) times `scale`: y = scale * value, as ggml.
void Iq4Group(const uint8_t* qs, float scale, float* y) {
  const __m256 sc = _mm256_set1_ps(scale);
  const __m256i low4 = _mm256_set1_epi32(0xf);
  for (int j = 0; j < 32; j += 8) {
    const __m256i code = _mm256_and_si256(_mm256_srli_epi32(Bytes8(qs + j % 16), j < 16 ? 0 : 4), low4);
    _mm256_storeu_ps(y + j, _mm256_mul_ps(sc, Iq4Values8(code)));
  }
}
void DequantIq4Nl(const uint8_t* b, float* y) { Iq4Group(b + 2, H(b), y); }

// Q4_1 / Q5_1: d = (max - min) / (2^bits - 1), q = trunc((x - min) / d + 0.5) (Q4_1 clipped at 15).
template <int kBits>
void QuantMinBlock(const float* x, uint8_t* b) {
  float min = FLT_MAX, max = -FLT_MAX;
  for (int j = 0; j < 32; ++j) min = std::min(min, x[j]), max = std::max(max, x[j]);
  const float d = (max - min) / ((1 << kBits) - 1), id = Inverse(d);
  if (!std::isfinite(d)) {  // a range beyond f32 (|x| near FLT_MAX): ggml's casts are undefined there
    std::memset(b, 0, kBits == 4 ? 20 : 24);
    PutH(b, NAN);
    return;
  }
  PutH(b, d);
  PutH(b + 2, min);
  uint8_t q[32];
  for (int j = 0; j < 32; ++j) {
    const float v = (x[j] - min) * id + 0.5f;  // in [0.5, 2^bits - 0.5] up to rounding
    q[j] = kBits == 4 ? uint8_t(std::min(15, int(int8_t(v)))) : uint8_t(v);
  }
  uint8_t* qs = b + (kBits == 4 ? 4 : 8);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = uint8_t((q[j] & 0xf) | (q[j + 16] & 0xf) << 4);
    qh |= uint32_t(q[j] >> 4 & 1) << j | uint32_t(q[j + 16] >> 4 & 1) << (j + 16);
  }
  if (kBits == 5) std::memcpy(b + 4, &qh, 4);
}

// Q5_0: m = the signed extreme, d = m / -16, q = min(31, trunc(x / d + 16.5)), as Q4_0 with 5 bits.
void QuantQ5_0(const float* x, uint8_t* b) {
  float amax = 0, m = 0;
  for (int j = 0; j < 32; ++j)
    if (amax < std::fabs(x[j])) amax = std::fabs(x[j]), m = x[j];
  const float d = m / -16, id = Inverse(d);
  PutH(b, d);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int q0 = std::min(31, int(int8_t(x[j] * id + 16.5f))), q1 = std::min(31, int(int8_t(x[j + 16] * id + 16.5f)));
    b[6 + j] = uint8_t((q0 & 0xf) | (q1 & 0xf) << 4);
    qh |= uint32_t(q0 >> 4 & 1) << j | uint32_t(q1 >> 4 & 1) << (j + 16);
  }
  std::memcpy(b + 2, &qh, 4);
}

// ggml's best_index_int8: the index of the table value nearest v; on a tie the upper one (the lower
// wins only when strictly nearer).
int BestIndex(float v) {
  const int8_t* t = kIq4NlValues;
  if (v <= t[0]) return 0;
  if (v >= t[15]) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    (v < t[mid] ? hi : lo) = mid;
  }
  return v - t[hi - 1] < t[hi] - v ? hi - 1 : hi;
}

// IQ4_NL / IQ4_XS, as ggml's quantize_row_iq4_nl_impl without an importance matrix and with
// ntry = 7 (what llama-quantize runs): per 32-element group the scale d is refined by least squares
// (weights x^2) over 15 trial inverse scales. kSub = 1 (IQ4_NL) keeps the f32 d as the f16 block
// scale; kSub = 8 (IQ4_XS) quantizes the 8 group scales to 6 bits against d = -max / 32.
// `d_out`, `qs` and for IQ4_XS `scales_h`/`scales_l` point into the block.
template <int kSub>
void QuantIq4(const float* x, uint8_t* d_out, uint8_t* qs, uint8_t* scales_h, uint8_t* scales_l) {
  constexpr int kTry = 7;
  const int8_t* values = kIq4NlValues;
  float scales[kSub];
  uint8_t L[32 * kSub];
  float max_scale = 0, amax_scale = 0;
  for (int ib = 0; ib < kSub; ++ib) {
    const float* xb = x + 32 * ib;
    float w[32];
    for (int j = 0; j < 32; ++j) w[j] = xb[j] * xb[j];
    float amax = 0, max = 0;
    for (int j = 0; j < 32; ++j)
      if (std::fabs(xb[j]) > amax) amax = std::fabs(xb[j]), max = xb[j];
    if (amax < kGroupMaxEps) {
      scales[ib] = 0;
      continue;
    }
    float d = -max / values[0], id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
      const float q = values[BestIndex(id * xb[j])];
      sumqx += w[j] * q * xb[j];
      sumq2 += w[j] * q * q;
    }
    d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    for (int itry = -kTry; itry <= kTry; ++itry) {
      id = (itry + values[0]) / max;
      sumqx = sumq2 = 0;
      for (int j = 0; j < 32; ++j) {
        const float q = values[BestIndex(id * xb[j])];
        sumqx += w[j] * q * xb[j];
        sumq2 += w[j] * q * q;
      }
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2) d = sumqx / sumq2, best = d * sumqx;
    }
    scales[ib] = d;
    if (std::fabs(d) > amax_scale) amax_scale = std::fabs(d), max_scale = d;
  }
  if (kSub == 1) {
    PutH(d_out, scales[0]);
    const float id = scales[0] != 0 ? 1 / scales[0] : 0;
    for (int j = 0; j < 32; ++j) L[j] = uint8_t(BestIndex(id * x[j]));
  } else {
    uint16_t sh = 0;
    const float d = -max_scale / 32, id = d != 0 ? 1 / d : 0.f;
    PutH(d_out, d);
    for (int ib = 0; ib < kSub; ++ib) {
      const int l = std::clamp(NearestInt(id * scales[ib]), -32, 31);
      const float dl = d * l, idl = dl != 0 ? 1 / dl : 0.f;
      for (int j = 0; j < 32; ++j) L[32 * ib + j] = uint8_t(BestIndex(idl * x[32 * ib + j]));
      const int s = l + 32;
      scales_l[ib / 2] = uint8_t(ib % 2 == 0 ? (s & 0xf) : (scales_l[ib / 2] | (s & 0xf) << 4));
      sh = uint16_t(sh | (s >> 4) << (2 * ib));
    }
    std::memcpy(scales_h, &sh, 2);
  }
  for (int i = 0; i < kSub; ++i)
    for (int j = 0; j < 16; ++j) qs[16 * i + j] = uint8_t(L[32 * i + j] | L[32 * i + 16 + j] << 4);
}

void QuantIq4Nl(const float* x, uint8_t* b) { QuantIq4<1>(x, b, b + 2, nullptr, nullptr); }

// ---- k-quant searches (ggml's make_qkx2_quants, make_q3_quants, make_qx_quants) ------------------

// Codes L in [0, nmax] and a scale/min pair with x ~ scale * L - min (min >= 0 returned in *the_min),
// searched over nstep + 1 trial scales; each trial's scale and min come from weighted least squares
// and the trial of least weighted error (squared, or absolute with use_mad) wins.
float MakeQkx2(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, float rmin,
               float rdelta, int nstep, bool use_mad) {
  float min = x[0], max = x[0], sum_w = weights[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += weights[i];
    sum_x += weights[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min), scale = 1 / iscale, best_error = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = uint8_t(std::clamp(NearestInt(iscale * (x[i] - min)), 0, nmax));
    float diff = scale * L[i] + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  uint8_t Laux[32];
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(NearestInt(iscale * (x[i] - min)), 0, nmax);
      Laux[i] = uint8_t(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        std::memcpy(L, Laux, size_t(n));
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Signed codes in [-nmax, nmax - 1] (stored + nmax in L) for x ~ scale * code: start from the
// extreme's scale, then up to 5 passes of coordinate descent on the x^2-weighted fit (make_q3_quants
// with do_rmse).
float MakeQ3(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), max = x[i];
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
    L[i] = int8_t(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (slx > 0) {
        float sl2 = suml2 - w * L[i] * L[i];
        const int new_l = std::clamp(NearestInt(x[i] * sl2 / slx), -nmax, nmax - 1);
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = int8_t(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = int8_t(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Signed codes in [-nmax, nmax - 1] (stored + nmax) for x ~ scale * code, weights x^2: the extreme's
// scale, then 18 trial scales around it, the best least-squares fit kept (make_qx_quants with
// rmse_type 1 and no importance weights).
float MakeQx(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), max = x[i];
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max, sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
    L[i] = int8_t(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = int8_t(nmax + std::clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// ---- k-quant blocks -----------------------------------------------------------------------------

// Q2_K/Q3_K: element 128 h + 32 j + l holds 2 bits j of qs[32 h + l].
void Pack2Bit(const uint8_t* L, uint8_t* qs) {
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const uint8_t* e = L + 128 * h + l;
      qs[32 * h + l] = uint8_t(e[0] | e[32] << 2 | e[64] << 4 | e[96] << 6);
    }
}

// Vectorized; y = (d * scale) * q - dmin * min as ggml computes it.
void DequantQ2_K(const uint8_t* b, float* y) {
  const uint8_t *scales = b, *qs = b + 16;
  const float d = H(b + 80), min = H(b + 82);
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 4; ++j)
      for (int l = 0; l < 32; l += 8) {
        const int s = 8 * h + 2 * j + l / 16;
        const __m256 dl = _mm256_set1_ps(d * float(scales[s] & 0xf)), ml = _mm256_set1_ps(min * float(scales[s] >> 4));
        const __m256i code = _mm256_and_si256(_mm256_srli_epi32(Bytes8(qs + 32 * h + l), 2 * j), _mm256_set1_epi32(3));
        StoreScaled8(y + 128 * h + 32 * j + l, code, dl, ml);
      }
}

void QuantQ2_K(const float* x, uint8_t* b) {
  constexpr float kQ4Scale = 15.f;
  uint8_t L[256], *scales_out = b, *qs = b + 16;
  float mins[16], scales[16], weights[16], max_scale = 0, max_min = 0;
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
    scales[j] = MakeQkx2(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  if (max_scale > 0) {
    const float iscale = kQ4Scale / max_scale;
    for (int j = 0; j < 16; ++j) scales_out[j] = uint8_t(NearestInt(iscale * scales[j]));
    PutH(b + 80, max_scale / kQ4Scale);
  } else {
    std::memset(scales_out, 0, 16);
    PutH(b + 80, 0.f);
  }
  if (max_min > 0) {
    const float iscale = kQ4Scale / max_min;
    for (int j = 0; j < 16; ++j) scales_out[j] = uint8_t(scales_out[j] | NearestInt(iscale * mins[j]) << 4);
    PutH(b + 82, max_min / kQ4Scale);
  } else {
    PutH(b + 82, 0.f);
  }
  for (int j = 0; j < 16; ++j) {  // the final codes against the stored (rounded) scales and mins
    const float d = H(b + 80) * float(scales_out[j] & 0xf);
    if (d == 0) continue;
    const float dm = H(b + 82) * float(scales_out[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) L[16 * j + ii] = uint8_t(std::clamp(NearestInt((x[16 * j + ii] + dm) / d), 0, 3));
  }
  Pack2Bit(L, qs);
}

// Q3_K's 6-bit scale s (0..63, i.e. stored + 32).
int Q3Scale(const uint8_t* sc, int s) {
  const int low = s < 8 ? sc[s] & 0xf : sc[s - 8] >> 4;
  return low | (sc[8 + s % 4] >> (2 * (s / 4)) & 3) << 4;
}

// Vectorized; y = (d * (scale - 32)) * q as ggml computes it.
void DequantQ3_K(const uint8_t* b, float* y) {
  const uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
  const float d_all = H(b + 108);
  const __m256i three = _mm256_set1_epi32(3), one = _mm256_set1_epi32(1), four = _mm256_set1_epi32(4);
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 4; ++j)
      for (int l = 0; l < 32; l += 8) {
        const __m256 dl = _mm256_set1_ps(d_all * float(Q3Scale(sc, 8 * h + 2 * j + l / 16) - 32));
        const __m256i low = _mm256_and_si256(_mm256_srli_epi32(Bytes8(qs + 32 * h + l), 2 * j), three);
        const __m256i high = _mm256_and_si256(_mm256_srli_epi32(Bytes8(hmask + l), 4 * h + j), one);
        const __m256i code = _mm256_sub_epi32(_mm256_add_epi32(low, _mm256_slli_epi32(high, 2)), four);
        StoreScaled8(y + 128 * h + 32 * j + l, code, dl, _mm256_setzero_ps());  // - 0: exact
      }
}

void QuantQ3_K(const float* x, uint8_t* b) {
  uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
  int8_t L[256];
  float scales[16], max_scale = 0, amax = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = MakeQ3(16, 4, x + 16 * j, L + 16 * j);
    if (std::fabs(scales[j]) > amax) amax = std::fabs(scales[j]), max_scale = scales[j];
  }
  std::memset(sc, 0, 12);
  if (max_scale != 0) {
    const float iscale = -32.f / max_scale;
    for (int j = 0; j < 16; ++j) {
      int l = std::clamp(int(int8_t(NearestInt(iscale * scales[j]))), -32, 31) + 32;
      if (j < 8) sc[j] = uint8_t(l & 0xf);
      else sc[j - 8] = uint8_t(sc[j - 8] | (l & 0xf) << 4);
      l >>= 4;
      sc[j % 4 + 8] = uint8_t(sc[j % 4 + 8] | l << (2 * (j / 4)));
    }
    PutH(b + 108, 1 / iscale);
  } else {
    PutH(b + 108, 0.f);
  }
  for (int j = 0; j < 16; ++j) {
    const float d = H(b + 108) * float(int8_t(Q3Scale(sc, j) - 32));
    if (d == 0) continue;
    for (int ii = 0; ii < 16; ++ii) L[16 * j + ii] = int8_t(std::clamp(NearestInt(x[16 * j + ii] / d), -4, 3) + 4);
  }
  std::memset(hmask, 0, 32);
  uint8_t low[256];
  for (int e = 0; e < 256; ++e) {  // bit 2 of element e goes to bit e / 32 of hmask[e % 32]
    if (L[e] > 3) hmask[e % 32] = uint8_t(hmask[e % 32] | 1 << (e / 32));
    low[e] = uint8_t(L[e] & 3);
  }
  Pack2Bit(low, qs);
}

// Q4_K (kBits 4) and Q5_K (kBits 5) share everything but the fifth bit. Vectorized (the prefill
// panels and the GEMV both run through here); the floats are those of the scalar reading
// y = (d * scale) * q - dmin * min.
template <int kBits>
void DequantQK(const uint8_t* b, float* y) {
  const float d = H(b), min = H(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + (kBits == 4 ? 16 : 48);
  const __m256i low4 = _mm256_set1_epi32(0xf);
  for (int s = 0; s < 8; ++s) {
    int sc, m;
    ScaleMinK4(scales, s, &sc, &m);
    const __m256 ds = _mm256_set1_ps(d * float(sc)), ms = _mm256_set1_ps(min * float(m));
    const uint8_t* q = qs + 32 * (s / 2);
    for (int l = 0; l < 32; l += 8) {
      __m256i v = _mm256_and_si256(_mm256_srli_epi32(Bytes8(q + l), 4 * (s % 2)), low4);
      if (kBits == 5) {
        const __m256i hb = _mm256_and_si256(_mm256_srli_epi32(Bytes8(qh + l), s), _mm256_set1_epi32(1));
        v = _mm256_or_si256(v, _mm256_slli_epi32(hb, 4));
      }
      StoreScaled8(y + 32 * s + l, v, ds, ms);
    }
  }
}

template <int kBits>
void QuantQK(const float* x, uint8_t* b) {
  constexpr int kMax = (1 << kBits) - 1;
  uint8_t L[256], *scales_out = b + 4;
  float mins[8], scales[8], weights[32], max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = kBits == 4 ? MakeQkx2(32, kMax, x + 32 * j, weights, L + 32 * j, &mins[j], -1.f, 0.1f, 20, false)
                           : MakeQkx2(32, kMax, x + 32 * j, weights, L + 32 * j, &mins[j], -0.5f, 0.1f, 15, false);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f, inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = std::min<uint8_t>(63, uint8_t(NearestInt(inv_scale * scales[j])));
    const uint8_t lm = std::min<uint8_t>(63, uint8_t(NearestInt(inv_min * mins[j])));
    if (j < 4) {
      scales_out[j] = ls;
      scales_out[j + 4] = lm;
    } else {
      scales_out[j + 4] = uint8_t((ls & 0xf) | (lm & 0xf) << 4);
      scales_out[j - 4] = uint8_t(scales_out[j - 4] | (ls >> 4) << 6);
      scales_out[j] = uint8_t(scales_out[j] | (lm >> 4) << 6);
    }
  }
  PutH(b, max_scale / 63.f);
  PutH(b + 2, max_min / 63.f);
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    ScaleMinK4(scales_out, j, &sc, &m);
    const float d = H(b) * float(sc);
    if (d == 0) continue;
    const float dm = H(b + 2) * float(m);
    for (int ii = 0; ii < 32; ++ii) L[32 * j + ii] = uint8_t(std::clamp(NearestInt((x[32 * j + ii] + dm) / d), 0, kMax));
  }
  uint8_t* qh = b + 16;
  uint8_t* qs = b + (kBits == 4 ? 16 : 48);
  if (kBits == 5) std::memset(qh, 0, 32);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      const int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
      qs[32 * c + l] = uint8_t((lo & 0xf) | (hi & 0xf) << 4);
      if (kBits == 5) qh[l] = uint8_t(qh[l] | (lo >> 4) << (2 * c) | (hi >> 4) << (2 * c + 1));
    }
}

// Vectorized; the floats are those of the scalar reading y = (d * scale) * (code - 32).
void DequantQ6_K(const uint8_t* b, float* y) {
  const uint8_t *ql = b, *qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = H(b + 208);
  const __m256i low4 = _mm256_set1_epi32(0xf), two = _mm256_set1_epi32(3), bias = _mm256_set1_epi32(32);
  const __m256 zero = _mm256_setzero_ps();
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; l += 8) {
        const __m256i lo = _mm256_and_si256(_mm256_srli_epi32(Bytes8(ql + 64 * h + l + 32 * (k % 2)), k < 2 ? 0 : 4), low4);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi32(Bytes8(qh + 32 * h + l), 2 * k), two);
        const __m256i code = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), bias);
        const __m256 scale = _mm256_set1_ps(d * float(sc[8 * h + 2 * k + l / 16]));
        StoreScaled8(y + 128 * h + 32 * k + l, code, scale, zero);  // - 0: exact, keeps one helper
      }
}

void QuantQ6_K(const float* x, uint8_t* b) {
  int8_t L[256];
  float scales[16], max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    scales[ib] = MakeQx(16, 32, x + 16 * ib, L + 16 * ib);
    if (std::fabs(scales[ib]) > max_abs_scale) max_abs_scale = std::fabs(scales[ib]), max_scale = scales[ib];
  }
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(b, 0, 210);
    return;
  }
  auto* sc = reinterpret_cast<int8_t*>(b + 192);
  const float iscale = -128.f / max_scale;
  PutH(b + 208, 1 / iscale);
  for (int ib = 0; ib < 16; ++ib) sc[ib] = int8_t(std::min(127, NearestInt(iscale * scales[ib])));
  for (int j = 0; j < 16; ++j) {
    const float d = H(b + 208) * float(sc[j]);
    if (d == 0) continue;
    for (int ii = 0; ii < 16; ++ii) L[16 * j + ii] = int8_t(std::clamp(NearestInt(x[16 * j + ii] / d), -32, 31) + 32);
  }
  uint8_t *ql = b, *qh = b + 128;
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const int8_t* e = L + 128 * h + l;
      ql[64 * h + l] = uint8_t((e[0] & 0xf) | (e[64] & 0xf) << 4);
      ql[64 * h + l + 32] = uint8_t((e[32] & 0xf) | (e[96] & 0xf) << 4);
      qh[32 * h + l] = uint8_t(e[0] >> 4 | (e[32] >> 4) << 2 | (e[64] >> 4) << 4 | (e[96] >> 4) << 6);
    }
}

void DequantIq4Xs(const uint8_t* b, float* y) {
  const float d = H(b);
  uint16_t sh;
  std::memcpy(&sh, b + 2, 2);
  const uint8_t* sl = b + 4;
  for (int s = 0; s < 8; ++s) {
    const int ls = (sl[s / 2] >> (4 * (s % 2)) & 0xf) | (sh >> (2 * s) & 3) << 4;
    Iq4Group(b + 8 + 16 * s, d * float(ls - 32), y + 32 * s);
  }
}

void QuantIq4Xs(const float* x, uint8_t* b) { QuantIq4<8>(x, b, b + 8, b + 2, b + 4); }

// ---- rows ---------------------------------------------------------------------------------------

void CheckWhole(int64_t n, int64_t elems, const char* what) {
  if (n % elems == 0) return;
  std::fprintf(stderr, "atp: %s of %lld elements: not a multiple of the %lld-element block\n", what, (long long)n,
               (long long)elems);
  std::abort();
}

// Row functions over blocks of kElems elements / kBytes bytes. kScaleAt: the offset of the f16 scale
// that a non-finite block gets as NaN.
template <int64_t kElems, size_t kBytes, void (*Dequant)(const uint8_t*, float*)>
void ToF32Row(const void* src, float* y, int64_t n) {
  CheckWhole(n, kElems, "block dequantization");
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kElems; ++b) Dequant(p + b * kBytes, y + b * kElems);
}

template <int64_t kElems, size_t kBytes, size_t kScaleAt, void (*Quant)(const float*, uint8_t*)>
void FromF32Row(const float* x, void* dst, int64_t n) {
  CheckWhole(n, kElems, "block quantization");
  auto* p = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / kElems; ++b, x += kElems, p += kBytes) {
    if (std::all_of(x, x + kElems, [](float v) { return std::isfinite(v); })) {
      Quant(x, p);
    } else {
      std::memset(p, 0, kBytes);
      PutH(p + kScaleAt, NAN);
    }
  }
}

template <int64_t kElems, size_t kBytes, size_t kScaleAt, void (*Dequant)(const uint8_t*, float*),
          void (*Quant)(const float*, uint8_t*)>
constexpr BlockCodec Codec() {
  return {kElems, kBytes, ToF32Row<kElems, kBytes, Dequant>, FromF32Row<kElems, kBytes, kScaleAt, Quant>};
}

constexpr BlockCodec kQ8_0 = {kQuantBlock, sizeof(BlockQ8_0), DequantizeRowQ8_0, QuantizeRowQ8_0};
constexpr BlockCodec kQ4_0 = {kQuantBlock, sizeof(BlockQ4_0), DequantizeRowQ4_0, QuantizeRowQ4_0};
constexpr BlockCodec kQ4_1 = Codec<32, 20, 0, DequantQ4_1, QuantMinBlock<4>>();
constexpr BlockCodec kQ5_0 = Codec<32, 22, 0, DequantQ5_0, QuantQ5_0>();
constexpr BlockCodec kQ5_1 = Codec<32, 24, 0, DequantQ5_1, QuantMinBlock<5>>();
constexpr BlockCodec kIq4Nl = Codec<32, 18, 0, DequantIq4Nl, QuantIq4Nl>();
constexpr BlockCodec kQ2_K = Codec<256, 84, 80, DequantQ2_K, QuantQ2_K>();
constexpr BlockCodec kQ3_K = Codec<256, 110, 108, DequantQ3_K, QuantQ3_K>();
constexpr BlockCodec kQ4_K = Codec<256, 144, 0, DequantQK<4>, QuantQK<4>>();
constexpr BlockCodec kQ5_K = Codec<256, 176, 0, DequantQK<5>, QuantQK<5>>();
constexpr BlockCodec kQ6_K = Codec<256, 210, 208, DequantQ6_K, QuantQ6_K>();
constexpr BlockCodec kIq4Xs = Codec<256, 136, 0, DequantIq4Xs, QuantIq4Xs>();

}  // namespace

const BlockCodec* FindBlockCodec(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16: return nullptr;
    case DType::kQ8_0: return &kQ8_0;
    case DType::kQ4_0: return &kQ4_0;
    case DType::kQ4_1: return &kQ4_1;
    case DType::kQ5_0: return &kQ5_0;
    case DType::kQ5_1: return &kQ5_1;
    case DType::kIQ4_NL: return &kIq4Nl;
    case DType::kQ2_K: return &kQ2_K;
    case DType::kQ3_K: return &kQ3_K;
    case DType::kQ4_K: return &kQ4_K;
    case DType::kQ5_K: return &kQ5_K;
    case DType::kQ6_K: return &kQ6_K;
    case DType::kIQ4_XS: return &kIq4Xs;
  }
  return nullptr;
}

}  // namespace atp
