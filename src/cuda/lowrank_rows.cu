#include "cuda/lowrank_rows.h"

namespace atp::cuda {

namespace {

// One block per (token, KV head), one thread per element of the head's row.
__global__ void RebuildLowRankKernel(const float* ck, const float* cv, const float* pk, const float* pvt, int B, int n_kv,
                                     int d, int rk, int rv, float* out_k, float* out_v) {
  const int64_t t = blockIdx.x;
  const int h = int(blockIdx.y);
  const int64_t b = t / B;
  for (int j = int(threadIdx.x); j < d; j += int(blockDim.x)) {
    const float* c = ck + (t * n_kv + h) * rk;
    const float* p = pk + ((b * n_kv + h) * d + j) * rk;
    float acc = 0.f;
    for (int i = 0; i < rk; ++i) acc = fmaf(c[i], p[i], acc);
    out_k[(t * n_kv + h) * d + j] = acc;
    const float* e = cv + (t * n_kv + h) * rv;
    const float* q = pvt + (b * n_kv + h) * rv * d + j;
    acc = 0.f;
    for (int i = 0; i < rv; ++i) acc = fmaf(e[i], q[int64_t(i) * d], acc);
    out_v[(t * n_kv + h) * d + j] = acc;
  }
}

}  // namespace

void RebuildLowRank(const float* ck, const float* cv, const float* pk, const float* pvt, int64_t n, int B, int n_kv,
                    int d, int rk, int rv, float* out_k, float* out_v, cudaStream_t s) {
  if (n <= 0) return;
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(n_kv));
  RebuildLowRankKernel<<<grid, d < 128 ? d : 128, 0, s>>>(ck, cv, pk, pvt, B, n_kv, d, rk, rv, out_k, out_v);
}

}  // namespace atp::cuda
