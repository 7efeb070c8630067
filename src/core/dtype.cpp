#include "core/dtype.h"

#include <immintrin.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "core/kquant.h"

namespace atp {

namespace {

[[noreturn]] void Die(const char* what, DType t, int64_t n) {
  if (IsBlockDType(t))
    std::fprintf(stderr, "atp: %s(%s, n=%lld): n must be a multiple of the %lld-element block (check with CheckDTypeCount)\n",
                 what, DTypeName(t).data(), (long long)n, (long long)DTypeBlockElems(t));
  else
    std::fprintf(stderr, "atp: %s(%s, n=%lld): invalid element count\n", what, DTypeName(t).data(), (long long)n);
  std::abort();
}

constexpr std::pair<DType, std::string_view> kNames[] = {
    {DType::kF32, "f32"},   {DType::kF16, "f16"},     {DType::kBF16, "bf16"}, {DType::kQ8_0, "q8_0"},
    {DType::kQ4_0, "q4_0"}, {DType::kQ4_1, "q4_1"},   {DType::kQ5_0, "q5_0"}, {DType::kQ5_1, "q5_1"},
    {DType::kIQ4_NL, "iq4_nl"}, {DType::kQ2_K, "q2_k"}, {DType::kQ3_K, "q3_k"}, {DType::kQ4_K, "q4_k"},
    {DType::kQ5_K, "q5_k"}, {DType::kQ6_K, "q6_k"},   {DType::kIQ4_XS, "iq4_xs"},
};

}  // namespace

std::string_view DTypeName(DType t) {
  for (const auto& [d, name] : kNames)
    if (d == t) return name;
  return "?";
}

bool ParseDType(std::string_view s, DType* out) {
  std::string lower(s);
  for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  // Only all-lower or all-upper spellings ("q4_k", "Q4_K"), as the names appear in our flags and in
  // safetensors/ggml listings.
  std::string upper(lower);
  for (char& c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
  if (s != lower && s != upper) return false;
  for (const auto& [d, name] : kNames)
    if (name == lower) return *out = d, true;
  return false;
}

bool IsBlockDType(DType t) { return FindBlockCodec(t) != nullptr; }

int64_t DTypeBlockElems(DType t) {
  const BlockCodec* c = FindBlockCodec(t);
  return c ? c->elems : 1;
}

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16:
    case DType::kBF16: return 2;
    default: break;
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
  const BlockCodec* c = FindBlockCodec(t);
  return c ? size_t(n / c->elems) * c->bytes : size_t(n) * DTypeSize(t);
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
    default: return FindBlockCodec(t)->to_f32(src, dst, int64_t(n));
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
    default: return FindBlockCodec(t)->from_f32(src, dst, int64_t(n));
  }
}

}  // namespace atp
