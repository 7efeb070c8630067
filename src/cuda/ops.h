// Elementwise and row kernels of the GPU forward pass (launchers; kernels in ops.cu). Each mirrors
// one CPU kernel of src/kernels/ops.h and fuses the conversions around it, so activations cross
// device memory once per stage. All launch on `s` and return without synchronizing.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace atp::cuda {

using bf16 = __nv_bfloat16;

// dst (n) bf16 = src (n) of dtype t (weights arrive in their file dtype; round to nearest even).
void ToBf16(DType t, const void* src, int64_t n, bf16* dst, cudaStream_t s);
// x (n, d) f32 = rows tokens[r] of table (vocab, d) bf16.
void EmbedRows(const bf16* table, const int32_t* tokens, int64_t n, int d, float* x, cudaStream_t s);
// y (n, d) bf16 = x[row r] * w / sqrt(mean(x[row r]^2) + eps); row r is rows[r], or r when rows is null.
void RmsNormBf16(const float* x, const int32_t* rows, int64_t n, int d, const float* w, float eps, bf16* y,
                 cudaStream_t s);
// From qkv (n, qd + 2*kvd) f32 (Q | K | V per row) plus bias (qd + 2*kvd, or null): q (n, qd) and
// k (n, kvd) rotated by RoPE at pos[r] (pairs i, i + head_dim/2; angle pos * inv_freq[i] in f32),
// v (n, kvd) copied.
void BiasRopeSplit(const float* qkv, const float* bias, const int32_t* pos, const float* inv_freq, int64_t n,
                   int n_heads, int n_kv, int head_dim, float* q, float* k, float* v, cudaStream_t s);
// The same in f32, rows 0..n-1: the layer input X handed to policies that read it (ReadsInput).
void RmsNormF32(const float* x, int64_t n, int d, const float* w, float eps, float* y, cudaStream_t s);
// h (n, ffn) bf16 = silu(gate) * up, from gu (n, 2*ffn) f32 holding gate | up per row.
void SiluMulBf16(const float* gu, int64_t n, int ffn, bf16* h, cudaStream_t s);
// The input of a one-row projection, formed on the fly from f32 activations and rounded to bf16
// exactly as the many-row path rounds its GEMM operands (RmsNormBf16, SiluMulBf16, F32ToBf16), so
// decode and prefill see the same operands: one launch instead of two per projection.
struct GemvInput {
  enum Kind { kF32, kRmsNorm, kSiluMul } kind = kF32;
  // kF32: x (in); kRmsNorm: x (in) * norm_w (in) / sqrt(mean(x^2) + eps); kSiluMul: x (2 * in)
  // holding gate | up, silu(gate) * up.
  const float* x = nullptr;
  const float* norm_w = nullptr;
  float eps = 0;
};
// y (out) f32 = W (out, in) bf16 . input (in) + beta * y: a decode step's projection. A persistent
// grid: each block forms the input in shared memory while its first loads of W are in flight, then
// each warp streams its rows of W with 16-byte loads, two batches of 8 per lane in flight.
// in % 8 == 0, in <= kGemvMaxIn (48 KB of f32 input per block), x 16-byte aligned.
constexpr int64_t kGemvMaxIn = 12288;
void Gemv(const bf16* W, int64_t out, int64_t in, const GemvInput& x, float beta, float* y, cudaStream_t s);
// Per-head change of basis (the lowrank policy's maps): out (n, heads, out_dim) f32 with
// out[t][h][o] = scale * sum_i in[t][h][i] * P[h / heads_per_basis][i * s_in + o * s_out] for
// in (n, heads, in_dim) f32 and P (heads / heads_per_basis bases) f32: s_in = out_dim, s_out = 1
// reads P (in_dim x out_dim) row-major (projection onto the first columns); s_in = 1, s_out = in_dim
// reads it transposed (reconstruction). out_dim <= 1024 (one thread per output element of a row).
void ProjectHeads(const float* in, int64_t n, int heads, int in_dim, const float* P, int heads_per_basis,
                  int out_dim, int s_in, int s_out, float scale, float* out, cudaStream_t s);
// y (n) bf16 = x (n) f32.
void F32ToBf16(const float* x, int64_t n, bf16* y, cudaStream_t s);

}  // namespace atp::cuda
