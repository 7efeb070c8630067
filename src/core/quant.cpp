#include "core/quant.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

// Q4_0's codes equal ggml's only without contraction of x * (1 / d) + 8.5 into one rounding: fused,
// x = -5.625 with d = 0.75 gives q = 0 instead of ggml's 1 (1 / d is not exact; WeightQuant test).
#if defined(__FP_FAST_FMAF) && !defined(ATP_QUANT_CONTRACT_OFF)
#error "core/quant.cpp must be compiled with -ffp-contract=off and -DATP_QUANT_CONTRACT_OFF (see CMakeLists.txt)"
#endif

namespace atp {

namespace {

void CheckWhole(int64_t n, const char* what) {
  if (n % kQuantBlock == 0) return;
  std::fprintf(stderr, "atp: %s of %lld elements: not a multiple of the 32-element block\n", what, (long long)n);
  std::abort();
}

// True if every element of the block is finite.
bool Finite(const float* x) {
  for (int64_t j = 0; j < kQuantBlock; ++j)
    if (!std::isfinite(x[j])) return false;
  return true;
}

// 1 / d as ggml computes it (0 for d = 0). A subnormal d would give an infinite 1 / d and NaN codes;
// it is 0 once stored as f16 anyway, so such a block gets q = 0 and decodes to zeros as ggml's does.
float InverseScale(float d) { return std::isnormal(d) ? 1 / d : 0; }

}  // namespace

void QuantizeRowQ8_0(const float* x, void* dst, int64_t n) {
  CheckWhole(n, "QuantizeRowQ8_0");
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock, out += sizeof(BlockQ8_0)) {
    BlockQ8_0 blk{};
    if (!Finite(x)) {
      blk.d = F32ToF16(NAN);
    } else {
      float amax = 0;
      for (int64_t j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
      const float d = amax / 127, id = InverseScale(d);
      blk.d = F32ToF16(d);
      // |x * id| <= 127 (up to one rounding of id), so roundf stays in int8's range.
      for (int64_t j = 0; j < kQuantBlock; ++j) blk.qs[j] = int8_t(std::roundf(x[j] * id));
    }
    std::memcpy(out, &blk, sizeof blk);
  }
}

void QuantizeRowQ4_0(const float* x, void* dst, int64_t n) {
  CheckWhole(n, "QuantizeRowQ4_0");
  constexpr int64_t kHalf = kQuantBlock / 2;
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock, out += sizeof(BlockQ4_0)) {
    BlockQ4_0 blk{};
    if (!Finite(x)) {
      blk.d = F32ToF16(NAN);
      std::memset(blk.qs, 0x88, sizeof blk.qs);
    } else {
      // The signed extreme: the first element of largest magnitude, keeping its sign (ggml's order).
      float amax = 0, m = 0;
      for (int64_t j = 0; j < kQuantBlock; ++j)
        if (amax < std::fabs(x[j])) amax = std::fabs(x[j]), m = x[j];
      const float d = m / -8, id = InverseScale(d);
      blk.d = F32ToF16(d);
      // x * id lies in [-8, 8] (up to rounding), so x * id + 8.5 > 0 and the cast truncates = floors.
      auto q = [&](float v) { return uint8_t(std::min(15, int(int8_t(v * id + 8.5f)))); };
      for (int64_t j = 0; j < kHalf; ++j) blk.qs[j] = uint8_t(q(x[j]) | q(x[j + kHalf]) << 4);
    }
    std::memcpy(out, &blk, sizeof blk);
  }
}

// Both dequantizers widen 8 codes at a time to f32 and scale them (the prefill path converts whole
// weight panels with these, so they are vectorized; the core library always has AVX2 + F16C).
void DequantizeRowQ8_0(const void* src, float* y, int64_t n) {
  CheckWhole(n, "DequantizeRowQ8_0");
  auto* p = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQuantBlock; ++b, p += sizeof(BlockQ8_0), y += kQuantBlock) {
    const __m256 d = _mm256_set1_ps(BlockScale(p));
    for (int j = 0; j < kQuantBlock; j += 8) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 2 + j));
      _mm256_storeu_ps(y + j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
    }
  }
}

void DequantizeRowQ4_0(const void* src, float* y, int64_t n) {
  CheckWhole(n, "DequantizeRowQ4_0");
  auto* p = static_cast<const uint8_t*>(src);
  const __m256i eight = _mm256_set1_epi32(8), low = _mm256_set1_epi32(0xf);
  for (int64_t b = 0; b < n / kQuantBlock; ++b, p += sizeof(BlockQ4_0), y += kQuantBlock) {
    const __m256 d = _mm256_set1_ps(BlockScale(p));
    for (int j = 0; j < kQuantBlock / 2; j += 8) {
      const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 2 + j)));
      const __m256i lo = _mm256_sub_epi32(_mm256_and_si256(bytes, low), eight);
      const __m256i hi = _mm256_sub_epi32(_mm256_srli_epi32(bytes, 4), eight);
      _mm256_storeu_ps(y + j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(lo)));
      _mm256_storeu_ps(y + j + kQuantBlock / 2, _mm256_mul_ps(d, _mm256_cvtepi32_ps(hi)));
    }
  }
}

}  // namespace atp
