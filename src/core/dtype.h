// Element types of weights and KV data, and conversions between them and f32.
// Weights stay in their file dtype; every kernel accumulates in f32. f32/f16/bf16 store single
// elements; the others store ggml's blocks (q8_0/q4_0: core/quant.h; q4_1, q5_0, q5_1, iq4_nl of 32
// elements and the k-quants q2_k..q6_k, iq4_xs of 256: core/kquant.h), so sizes of those come from
// DTypeBytes(t, n) and DTypeSize refuses them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "core/status.h"

namespace atp {

enum class DType { kF32, kF16, kBF16, kQ8_0, kQ4_0, kQ4_1, kQ5_0, kQ5_1, kIQ4_NL, kQ2_K, kQ3_K, kQ4_K, kQ5_K, kQ6_K, kIQ4_XS };

// "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "q2_k", ..., "q6_k", "iq4_xs".
std::string_view DTypeName(DType t);
// Accepts our names and their upper-case forms (safetensors' "F32"/"F16"/"BF16", ggml's "Q4_K").
bool ParseDType(std::string_view s, DType* out);

// True for the block dtypes (all but f32/f16/bf16), which have no size per element.
bool IsBlockDType(DType t);
// Elements per storage block: 1 for f32/f16/bf16, 32 for q8_0/q4_0/q4_1/q5_0/q5_1/iq4_nl, 256 for the k-quants.
int64_t DTypeBlockElems(DType t);
// Bytes of one element of f32/f16/bf16. A block dtype has none: calling this with one is a bug and
// aborts with a message naming DTypeBytes. Kept for the KV code, whose dtypes are never blocks.
size_t DTypeSize(DType t);
// Ok when n >= 0 elements of t fill whole blocks, else InvalidArgument naming dtype, n and the block.
// Check user input (tensor shapes) with this before DTypeBytes/ToF32/FromF32.
Status CheckDTypeCount(DType t, int64_t n);
// Bytes holding n elements of t. n must fill whole blocks (a bug otherwise: aborts with a message).
size_t DTypeBytes(DType t, int64_t n);

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

// Converts n elements of type t at src to f32 (vectorized where the CPU allows). For a block dtype
// src points at a block boundary and n fills whole blocks (aborts otherwise).
void ToF32(DType t, const void* src, float* dst, size_t n);
// Converts n f32 values to type t at dst (block dtypes: ggml's reference quantizers, whole blocks).
void FromF32(DType t, const float* src, void* dst, size_t n);

}  // namespace atp
