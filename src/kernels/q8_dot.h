// Decode-time dot products of block-quantized weight rows with activations quantized to 8 bits, the
// way llama.cpp runs its CPU decode: each activation row is quantized once per GEMV call to blocks of
// 32 int8 codes with an f32 scale, and a weight row is then consumed in integer arithmetic (AVX2
// maddubs/madd) on its packed codes, with one float operation per 32 elements. Only the GEMV path
// (few activation rows, kernels/matmul.cpp) uses this; prefill keeps f32 activations.
//
// Every supported weight block is described by one decomposition (Q8Terms below): per 32-element
// chunk, signed integer codes v, per 16-element half an integer scale and an integer min, and per
// block two floats a, b, so that weight element j of chunk k is  a * scale[j/16] * v[j] - b * min[j/16].
// The dot with an activation block (d, q) is then  a * d * sum(scale * v * q) - b * sum(min * d * sum(q))
// over halves: integers exact, floats only per chunk. DotRowQ8Ref evaluates exactly that from
// DecodeQ8Terms (the test oracle, and the kernel without AVX2); DotRowQ8's AVX2 kernels compute
// the same per-chunk integers from the packed bytes in registers.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace atp {

// 32 activations x as x ~ d * q: d = amax / 127 (0 for an all-zero block), q = round(x * (1/d)) in
// [-127, 127]; sum = d * (sum of all 32 q) and s[h] = d * (sum of q over half h), each rounded once
// to f32, for the weight types with a min. |x - d * q| <= d * (1/2 + 2^-16) (x * (1/d) rounds once,
// at |x/d| <= 127).
struct BlockQ8A {
  int8_t q[32];
  float d;
  float sum;
  float s[2];
};
static_assert(sizeof(BlockQ8A) == 48, "three activation blocks per 144 bytes");

// One row of `in` f32 values (a multiple of 32) -> in / 32 blocks. Non-finite input gives d = NaN,
// so the products stay NaN rather than plausible numbers.
void QuantizeRowQ8A(const float* x, int64_t in, BlockQ8A* dst);

// True for the weight dtypes DotRowQ8 takes (all blocks but IQ4_NL, Q2_K, Q3_K, IQ4_XS, Q4_1,
// Q5_0, Q5_1 for now: those keep matmul's f32 path).
bool HasQ8Dot(DType t);

// The integer decomposition of one weight block (layouts in core/quant.h and core/kquant.h).
struct Q8Chunk {
  int8_t v[32];        // codes with any per-element offset applied (Q4_0: q - 8, Q6_K: q - 32)
  int32_t scale[2];    // per half of 16
  int32_t min[2];      // per half of 16
};
struct Q8Terms {
  float a, b;          // block scale and min scale (b = 0 where the type has no min)
  int chunks;          // 1 for 32-element blocks, 8 for the 256-element k-quants
  Q8Chunk c[8];
};
// block points at one block of t (HasQ8Dot(t)); reads DTypeBytes(t, DTypeBlockElems(t)) bytes.
void DecodeQ8Terms(DType t, const uint8_t* block, Q8Terms* out);

// y[r * out] = dot(weight row w, activation row r) for r < rows (1..8): w holds `in` elements of t
// (HasQ8Dot(t), in a multiple of the block); activation row r is x[r * in / 32 ...].
// Per chunk both functions form the same integers; they differ only in the order of the float
// additions (DotRowQ8 sums 8 lanes, and per chunk or block), so their results agree to within f32
// summation error over the chunks' terms.
void DotRowQ8(DType t, const uint8_t* w, int64_t in, const BlockQ8A* x, int rows, float* y, int64_t out);
void DotRowQ8Ref(DType t, const uint8_t* w, int64_t in, const BlockQ8A* x, int rows, float* y, int64_t out);

}  // namespace atp
