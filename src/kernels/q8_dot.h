// Decode-time dot products of block-quantized weight rows with activations quantized to 8 bits, the
// way llama.cpp runs its CPU decode: each activation row is quantized once per GEMV call to blocks of
// 32 int8 codes with an f32 scale, and a weight row is then consumed in integer arithmetic (AVX2
// maddubs/madd) on its packed codes, with one float operation per 32 elements. Only the GEMV path
// (few activation rows, kernels/matmul.cpp) uses this; prefill keeps f32 activations.
//
// Every block dtype is described by one decomposition (Q8Terms below): per 32-element
// chunk, integer codes v, per 16-element half an integer scale and an integer min, and per
// block two floats a, b, so that weight element j of chunk k is  a * scale[j/16] * v[j] - b * min[j/16].
// The dot with an activation block (d, q) is then  a * d * sum(scale * v * q) - b * sum(min * d * sum(q))
// over halves: integers exact, floats only per chunk. DotRowQ8Ref evaluates exactly that from
// DecodeQ8Terms (the test oracle, and the kernel without AVX2); DotRowQ8's AVX2 kernels compute
// the same per-chunk integers from the packed bytes in registers (AVX-512 machines run them too).
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace atp {

// Rows of activations quantized in blocks of 32, x ~ d * q: d = amax / 127 (0 for an all-zero block),
// q = round-to-nearest-even(x * (1/d)) in [-127, 127], so |x - d * q| <= d * (1/2 + 2^-16) (x * (1/d) rounds once,
// at |x/d| <= 127). A block with a non-finite value gets d = NaN, so products stay NaN rather than
// plausible numbers. Stored as arrays (a k-quant kernel loads a super-block's 8 sums as one vector);
// block b of row r is index r * blocks + b.
struct Q8Rows {
  int64_t blocks = 0;            // per row: in / 32
  const int8_t* q = nullptr;     // 32 codes per block
  const float* d = nullptr;      // per block
  const float* sum = nullptr;    // per block: d * (sum of its 32 codes), rounded once
  const float* half = nullptr;   // 2 per block: d * (sum of codes 0..15, 16..31), rounded once
  Q8Rows From(int64_t row) const {  // the rows from `row` on
    const int64_t i = row * blocks;
    return {blocks, q + 32 * i, d + i, sum + i, half + 2 * i};
  }
};

// Holds quantized rows; Quantize's view stays valid until the next call.
class Q8Buffer {
 public:
  // n rows of `in` f32 values (in a multiple of 32: aborts otherwise).
  Q8Rows Quantize(const float* x, int64_t n, int64_t in);

 private:
  std::vector<int8_t> q_;
  std::vector<float> d_, sum_, half_;
};

// True for the weight dtypes DotRowQ8 takes: every block dtype (not f32/f16/bf16).
bool HasQ8Dot(DType t);

// The integer decomposition of one weight block (layouts in core/quant.h and core/kquant.h).
struct Q8Chunk {
  int8_t v[32];        // codes: signed for Q8_0 and the IQ4 tables, else unsigned with the offset
                       // (Q4_0's 8, Q5_0's 16, Q3_K's 4, Q6_K's 32) or min in `min`
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

// y[r * out + o] = dot(weight row o, activation row r) for o < n_out, r < rows (1..8): weight row o
// starts at w + o * DTypeBytes(t, in) and holds `in` elements of t (HasQ8Dot(t), in a multiple of the
// block); x holds the `rows` activation rows.
// Per chunk both functions form the same integers; they differ only in the order of the float
// additions (DotRowQ8 sums 8 lanes, per chunk or block), so their results agree to within f32
// summation error over the chunks' terms.
void DotRowQ8(DType t, const uint8_t* w, int64_t n_out, int64_t in, const Q8Rows& x, int rows, float* y, int64_t out);
void DotRowQ8Ref(DType t, const uint8_t* w, int64_t n_out, int64_t in, const Q8Rows& x, int rows, float* y, int64_t out);
// DotRowQ8 over rows interleaved in groups of 8 (core/interleave.h; CanInterleave(t)): w points at a
// group, and the `groups` groups from it give y[r * out + o] for o < 8 * groups. The same integers
// per block; the floats are summed per row over the blocks (one lane per row), so the results agree
// with DotRowQ8Ref's to within f32 summation error, as DotRowQ8's do.
void DotRowsQ8x8(DType t, const uint8_t* w, int64_t groups, int64_t in, const Q8Rows& x, int rows, float* y, int64_t out);

}  // namespace atp
