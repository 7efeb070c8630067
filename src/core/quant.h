// ggml's Q8_0 and Q4_0 weight blocks, bit for bit (so GGUF files load as they are), and their
// reference quantizers and dequantizers (same bytes as quantize_row_*_ref: quant.cpp is compiled
// without fused multiply-adds, as kquant.cpp). Kernels that read blocks in registers live in src/kernels.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace atp {

constexpr int64_t kQuantBlock = 32;  // elements per Q8_0 / Q4_0 block

// Q8_0: x = d * q. 34 bytes: f16 scale d, then q[0..31] as int8.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQuantBlock];
};
// Q4_0: x = d * (q - 8), q in [0, 15]. 18 bytes: f16 scale d, then 16 bytes; element j < 16 is the
// low nibble of byte j and element j + 16 its high nibble.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQuantBlock / 2];
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18, "ggml's block sizes");

// The scale of a block at p (a block start in memory of any alignment: GGUF only aligns tensors, and
// blocks are 34 or 18 bytes long).
inline float BlockScale(const void* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);  // F16ToF32 inline: it sits in loops over blocks
}

// n f32 values -> n / 32 blocks at dst. n must be a multiple of 32 (aborts otherwise; validate
// shapes with CheckDTypeCount). As ggml's quantize_row_q8_0_ref: d = amax / 127, q = round(x / d)
// (half away from zero, computed as x * (1/d) in f32 like ggml); an all-zero block gets d = 0.
// As ggml's quantize_row_q4_0_ref: m = the element of largest |x| with its sign, d = m / -8,
// q = min(15, trunc(x / d + 8.5)); so m itself maps to q = 0 exactly and the other side clips at 15.
// The stored d is f16(d) while q is computed from the f32 d, as ggml does.
// Non-finite input (NaN, +-inf) in a block: ggml's result is undefined there (a float-to-int cast
// of NaN); ours is d = NaN and all q = 0 (Q4_0: q = 8), so the whole block decodes to NaN and the
// corruption stays visible instead of turning into plausible numbers.
void QuantizeRowQ8_0(const float* x, void* dst, int64_t n);
void QuantizeRowQ4_0(const float* x, void* dst, int64_t n);
// n / 32 blocks at src -> n f32 values.
void DequantizeRowQ8_0(const void* src, float* y, int64_t n);
void DequantizeRowQ4_0(const void* src, float* y, int64_t n);

}  // namespace atp
