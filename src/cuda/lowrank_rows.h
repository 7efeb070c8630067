// `lowrank:mode=online`'s compressed tokens rebuilt on the GPU (cuda/lowrank_policy.cpp reads them
// as principal rows through cuda::Visibility). Launcher only; every buffer is the caller's.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace atp::cuda {

// Tokens 0 .. n - 1 (blocks of B tokens, n_kv KV heads of width d) rebuilt in f32 from their
// coefficients and their block's bases, summed over c in order with fused multiply-adds:
//   out_k[t][h d + j] = sum_{c < rk} ck[(t n_kv + h) rk + c] * pk[((b n_kv + h) d + j) rk + c]
//   out_v[t][h d + j] = sum_{c < rv} cv[(t n_kv + h) rv + c] * pvt[((b n_kv + h) rv + c) d + j]
// with b = t / B: P_k (d, rk) and P_v^T (rv, d) per block and KV head (kv/lowrank_policy.h's
// OnlineBlockBases), out rows of n_kv * d.
void RebuildLowRank(const float* ck, const float* cv, const float* pk, const float* pvt, int64_t n, int B, int n_kv,
                    int d, int rk, int rv, float* out_k, float* out_v, cudaStream_t s);

}  // namespace atp::cuda
