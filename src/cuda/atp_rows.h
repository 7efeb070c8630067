// ATP's per-token work on the GPU for keep=, residual= and rope=pre (issue 19; the twin of
// kv/atp_policy.cpp's CompressBlock and Summarize): a block's rows split into summarized and kept
// ones, keys turned back to before RoPE, each summarized token's residual after projection, and the
// tokens rebuilt from principal rows, coefficients and quantized residuals (kv/rope_rows.h for the
// rotations). Launchers only; every buffer is the caller's.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention.h"

namespace atp::cuda {

// keep=E: the rows of n blocks of B rows (`width` f32 each; block 0 at `first` when not null, the
// others B * width floats apart from `rest`, as cuda/block_basis.h reads them) sorted by split
// (cuda::BlockBases' keep output, one (B) per block and group of `span` columns; span = width: one
// for the whole row): for block z, group g and j < B - keep, row j of `sum` (block z's at rows
// z * (B - keep) ..) gets row split[(z * (width / span) + g) * B + j] of the block, and for j >= B -
// keep, row j - (B - keep) of `kept` (block z's at rows z * keep ..); columns of group g only. A
// null `sum` or `kept` skips those rows.
void GatherSplit(const float* first, const float* rest, int n, int B, int keep, int width, int span, const int32_t* split,
                 float* sum, float* kept, cudaStream_t s);

// Rows (n, n_kv * head_dim) f32, row r at position pos0 + r, turned back by RoPE in place: ApplyRope
// at -(pos0 + r) (kv/rope_rows.h UnapplyRope: pair (i, i + head_dim/2), angle float(-p) * inv_freq[i]).
void UnrotateKeys(float* x, int64_t n, int n_kv, int head_dim, int64_t pos0, const float* inv_freq, cudaStream_t s);

// The residuals of n blocks of B rows after projection, in place: for block z, row i and element e of
// K and V (n * B rows of `width` f32), with g = e / span (span = width: one basis per block; span =
// head_dim: one per KV head) and U_zg = U + (z * (width / span) + g) * B * B (B, B) row-major,
// K[z B + i][e] -= U_zg[i][c] * PK[R_z + c][e] for c = 0 .. r_z - 1 in order, and V likewise. PK, PV:
// rows of `width`, as cuda::PrincipalRows writes them (read back in f32 as stored): block z's r_z =
// ranks[z * (width / span)] principal rows (every group of a block has the same rank) from row R_z =
// (r_0 + extra) + .. + (r_(z-1) + extra) on, then its `extra` kept rows.
void SubtractProjection(const float* U, const int32_t* ranks, int n, int B, int extra, int span, const float* PK,
                        const float* PV, int width, float* K, float* V, cudaStream_t s);

// What a query reads of the tokens of blocks [0, nb) (B tokens each, n of them summarized and B - n
// kept exact by keep=, all KV heads), B rows per block: row b B + i for i < n is summarized token i
// of block b, KV head h, as kv/atp_policy.cpp's Summarize forms it: its decoded residual (rk, rv:
// token b n + i) plus sum_{c < r_b} coef[i][c] * (principal row R_b + c of pk, pv) in c order, where
// coef = coefs + ((b * groups + g) * n) * r (n, r) row-major (r: the most principal rows of a block),
// g = h when groups > 1 (one basis per KV head) else 0, and block b's rows begin at R_b = b (r + B -
// n) with r_b = r (a fixed rank), or with `ends` (cuda::PrincipalRows' block ends, tau=) at R_b =
// ends[b - 1] (0 for b = 0) with r_b = ends[b] - R_b - (B - n); keys then rotated at position b B + o when inv_freq is not null, o = offsets[(b
// * groups + g) * n + i] (the token's place in its block; i when offsets is null) (kv/rope_rows.h
// BlockRope: the base b B's angle composed with the offset o's). Row b B + i for i >= n is kept row
// i - n of block b as stored: row R_b + r_b + i - n of pk, pv (cuda::PrincipalRows' extra rows), not
// rotated (kept keys are stored as appended). Written to out_k and out_v (the exact forms
// f32, f16 or bf16, as pk; rounded to nearest even).
struct RebuildArgs {
  const float* coefs = nullptr;
  int groups = 1, B = 0, n = 0, r = 0;
  int64_t nb = 0;
  DeviceRows pk, pv;      // principal rows then kept rows per block, exact form
  DeviceRows rk, rv;      // residuals, a KIVI (rk: key rows, channel parameters), MX or NVFP4 form
  const int32_t* ends = nullptr;     // device; ranks per block (tau=): where each block's rows end in pk, pv
  const int32_t* offsets = nullptr;  // device; rope=pre with keep=: the summarized tokens' offsets
  const float* inv_freq = nullptr;   // device, head_dim / 2; null: keys as rebuilt (rope=post)
  DeviceRows out_k, out_v;           // form of pk
};
void RebuildRows(const RebuildArgs& a, cudaStream_t s);

}  // namespace atp::cuda
