// ATP's per-token work on the GPU for residual= and rope=pre (issue 19; the twin of kv/atp_policy.cpp's
// CompressBlock and Summarize): keys turned back to before RoPE, each summarized token's residual
// after projection, and the tokens rebuilt from principal rows, coefficients and quantized residuals
// (kv/rope_rows.h for the rotations). Launchers only; every buffer is the caller's.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention.h"

namespace atp::cuda {

// Rows (n, n_kv * head_dim) f32, row r at position pos0 + r, turned back by RoPE in place: ApplyRope
// at -(pos0 + r) (kv/rope_rows.h UnapplyRope: pair (i, i + head_dim/2), angle float(-p) * inv_freq[i]).
void UnrotateKeys(float* x, int64_t n, int n_kv, int head_dim, int64_t pos0, const float* inv_freq, cudaStream_t s);

// The residuals of n blocks of B rows after projection, in place: for block z, row i and element e of
// K and V (n * B rows of `width` f32), with g = e / span (span = width: one basis per block; span =
// head_dim: one per KV head) and U_zg = U + (z * (width / span) + g) * B * B (B, B) row-major,
// K[z B + i][e] -= U_zg[i][c] * PK[z r + c][e] for c = 0 .. r - 1 in order (PK, PV: n * r rows of
// `width`, block z's r principal rows as stored, read back in f32), and V likewise.
void SubtractProjection(const float* U, int n, int B, int r, int span, const float* PK, const float* PV, int width,
                        float* K, float* V, cudaStream_t s);

// What a query reads of the summarized tokens of blocks [0, nb) (B tokens each, all KV heads): token
// i of block b, KV head h, as kv/atp_policy.cpp's Summarize forms it: its decoded residual (rk, rv:
// KIVI rows, token b B + i) plus sum_c coef[i][c] * (principal row b r + c of pk, pv) in c order, where
// coef = coefs + ((b * groups + g) * B) * r (B, r) row-major, g = h when groups > 1 (one basis per KV
// head) else 0; keys then rotated at position b B + i when inv_freq is not null (kv/rope_rows.h
// BlockRope: the base b B's angle composed with the offset i's). Written to rows b B + i of out_k and
// out_v (the exact forms f32, f16 or bf16, as pk; rounded to nearest even).
struct RebuildArgs {
  const float* coefs = nullptr;
  int groups = 1, B = 0, r = 0;
  int64_t nb = 0;
  DeviceRows pk, pv;      // principal rows, exact form
  DeviceRows rk, rv;      // residuals, a KIVI form (rk: key rows, channel parameters)
  const float* inv_freq = nullptr;  // device, head_dim / 2; null: keys as rebuilt (rope=post)
  DeviceRows out_k, out_v;          // form of pk
};
void RebuildRows(const RebuildArgs& a, cudaStream_t s);

}  // namespace atp::cuda
