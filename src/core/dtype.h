// Element types of weights and KV data, and scalar conversions between them.
// Weights stay in their file dtype; every kernel accumulates in f32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace atp {

enum class DType { kF32, kF16, kBF16 };

size_t DTypeSize(DType t);
std::string_view DTypeName(DType t);                 // "f32", "f16", "bf16"
bool ParseDType(std::string_view s, DType* out);     // accepts our names and safetensors' "F32"/"F16"/"BF16"

inline float Bf16ToF32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Round to nearest even, as PyTorch does; NaN stays NaN.
inline uint16_t F32ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);

// Converts n elements of type t at src to f32 (vectorized where the CPU allows).
void ToF32(DType t, const void* src, float* dst, size_t n);
// Converts n f32 values to type t at dst.
void FromF32(DType t, const float* src, void* dst, size_t n);

}  // namespace atp
