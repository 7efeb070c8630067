#include "core/dtype.h"

#include <immintrin.h>

#include <cstdio>
#include <cstdlib>

#include "core/quant.h"

namespace atp {

namespace {

[[noreturn]] void Die(const char* what, DType t, int64_t n) {
  std::fprintf(stderr, "atp: %s(%s, n=%lld): %s\n", what, DTypeName(t).data(), (long long)n,
               IsBlockDType(t) ? "n must be a multiple of the 32-element block (check with CheckDTypeCount)"
                               : "invalid element count");
  std::abort();
}

}  // namespace

std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kQ8_0: return "q8_0";
    case DType::kQ4_0: return "q4_0";
  }
  return "?";
}

bool ParseDType(std::string_view s, DType* out) {
  if (s == "f32" || s == "F32") *out = DType::kF32;
  else if (s == "f16" || s == "F16") *out = DType::kF16;
  else if (s == "bf16" || s == "BF16") *out = DType::kBF16;
  else if (s == "q8_0" || s == "Q8_0") *out = DType::kQ8_0;
  else if (s == "q4_0" || s == "Q4_0") *out = DType::kQ4_0;
  else return false;
  return true;
}

bool IsBlockDType(DType t) { return t == DType::kQ8_0 || t == DType::kQ4_0; }

int64_t DTypeBlockElems(DType t) { return IsBlockDType(t) ? kQuantBlock : 1; }

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16:
    case DType::kBF16: return 2;
    case DType::kQ8_0:
    case DType::kQ4_0: break;
  }
  std::fprintf(stderr, "atp: DTypeSize(%s): a block dtype has no size per element; use DTypeBytes(t, n)\n",
               DTypeName(t).data());
  std::abort();
}

Status CheckDTypeCount(DType t, int64_t n) {
  if (n < 0) return Status::InvalidArgument("negative element count " + std::to_string(n));
  if (n % DTypeBlockElems(t) != 0)
    return Status::InvalidArgument(std::string(DTypeName(t)) + " stores blocks of " + std::to_string(DTypeBlockElems(t)) +
                                   " elements; " + std::to_string(n) + " is not a multiple");
  return Status::Ok();
}

size_t DTypeBytes(DType t, int64_t n) {
  if (!CheckDTypeCount(t, n).ok()) Die("DTypeBytes", t, n);
  switch (t) {
    case DType::kQ8_0: return size_t(n / kQuantBlock) * sizeof(BlockQ8_0);
    case DType::kQ4_0: return size_t(n / kQuantBlock) * sizeof(BlockQ4_0);
    default: return size_t(n) * DTypeSize(t);
  }
}

float F16ToF32(uint16_t h) { return _cvtsh_ss(h); }
uint16_t F32ToF16(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

void ToF32(DType t, const void* src, float* dst, size_t n) {
  size_t i = 0;
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kBF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
        __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(w));
      }
      for (; i < n; ++i) dst[i] = Bf16ToF32(s[i]);
      return;
    }
    case DType::kF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
      for (; i < n; ++i) dst[i] = F16ToF32(s[i]);
      return;
    }
    case DType::kQ8_0: return DequantizeRowQ8_0(src, dst, int64_t(n));
    case DType::kQ4_0: return DequantizeRowQ4_0(src, dst, int64_t(n));
  }
}

void FromF32(DType t, const float* src, void* dst, size_t n) {
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = F32ToBf16(src[i]);
      return;
    }
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = F32ToF16(src[i]);
      return;
    }
    case DType::kQ8_0: return QuantizeRowQ8_0(src, dst, int64_t(n));
    case DType::kQ4_0: return QuantizeRowQ4_0(src, dst, int64_t(n));
  }
}

}  // namespace atp
