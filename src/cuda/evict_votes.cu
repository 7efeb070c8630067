// Kernels behind cuda/evict_votes.h: attention votes in f32, and row gathers in any exact or MX form.
#include <cmath>

#include "cuda/evict_votes.h"

namespace atp::cuda {

namespace {

constexpr int kThreads = 128;

__device__ float Dot(const float* q, const float* k, int d) {
  float s = 0.f;
  for (int i = 0; i < d; ++i) s = fmaf(q[i], k[i], s);
  return s;
}

// One block per (voting query, query head): the log-sum-exp of its scaled scores over the rows it sees.
// Each thread keeps a running (max, sum) over rows tid, tid + kThreads, ...; the block merges them in
// a fixed tree.
__global__ void LseKernel(AttnShape a, const float* K, const float* Q, int64_t from, int64_t base, float* lse) {
  const int64_t t = from + blockIdx.x;
  const int h = blockIdx.y, g = a.n_heads / a.n_kv, kvh = h / g, d = a.head_dim;
  const float scale = rsqrtf(float(d));
  const float* q = Q + (t * a.n_heads + h) * d;
  const int64_t seen = base + t + 1;
  float m = -INFINITY, l = 0.f;
  for (int64_t j = threadIdx.x; j < seen; j += kThreads) {
    const float s = Dot(q, K + (j * a.n_kv + kvh) * d, d) * scale;
    const float nm = fmaxf(m, s);
    l = l * expf(m - nm) + expf(s - nm);
    m = nm;
  }
  __shared__ float sm[kThreads], sl[kThreads];
  sm[threadIdx.x] = m, sl[threadIdx.x] = l;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) {
      const float m2 = sm[threadIdx.x + w], l2 = sl[threadIdx.x + w], m1 = sm[threadIdx.x], l1 = sl[threadIdx.x];
      const float nm = fmaxf(m1, m2);
      sl[threadIdx.x] = (l1 > 0.f ? l1 * expf(m1 - nm) : 0.f) + (l2 > 0.f ? l2 * expf(m2 - nm) : 0.f);
      sm[threadIdx.x] = nm;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) lse[blockIdx.x * a.n_heads + h] = sm[0] + logf(sl[0]);
}

// One thread per (row, KV head): its weight under every voting query and query head of the group.
__global__ void VoteKernel(AttnShape a, const float* K, int64_t n, const float* Q, int64_t T, int64_t from,
                           int64_t base, const float* lse, float* votes) {
  const int64_t j = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const int kvh = blockIdx.y, g = a.n_heads / a.n_kv, d = a.head_dim;
  if (j >= n) return;
  const float scale = rsqrtf(float(d));
  const float* k = K + (j * a.n_kv + kvh) * d;
  float v = 0.f;
  for (int64_t t = j - base > from ? j - base : from; t < T; ++t)  // the queries that see row j: base + t >= j
    for (int hh = 0; hh < g; ++hh) {
      const int h = kvh * g + hh;
      const float s = Dot(Q + (t * a.n_heads + h) * d, k, d) * scale;
      v += expf(s - lse[(t - from) * a.n_heads + h]);
    }
  votes[kvh * n + j] = v;
}

// One block per (row, KV head): its element bytes, then its scale bytes.
__global__ void GatherKernel(DeviceRows src, DeviceRows dst, const int32_t* idx, int64_t n, int eb, int sb) {
  const int64_t j = blockIdx.x;
  const int h = blockIdx.y;
  const int64_t from = idx[h * n + j];
  const uint8_t* se = src.elems + (from * src.n_kv + h) * eb;
  uint8_t* de = dst.elems + (j * dst.n_kv + h) * eb;
  for (int i = threadIdx.x; i < eb; i += blockDim.x) de[i] = se[i];
  if (sb == 0) return;
  const uint8_t* ss = src.scales + (from * src.n_kv + h) * sb;
  uint8_t* ds = dst.scales + (j * dst.n_kv + h) * sb;
  for (int i = threadIdx.x; i < sb; i += blockDim.x) ds[i] = ss[i];
}

}  // namespace

void AttentionVotes(const AttnShape& a, const float* K, int64_t n, const float* Q, int64_t T, int64_t from,
                    int64_t base, float* lse, float* votes, cudaStream_t s) {
  if (n <= 0) return;
  if (from < T) LseKernel<<<dim3(unsigned(T - from), unsigned(a.n_heads)), kThreads, 0, s>>>(a, K, Q, from, base, lse);
  VoteKernel<<<dim3(unsigned((n + kThreads - 1) / kThreads), unsigned(a.n_kv)), kThreads, 0, s>>>(a, K, n, Q, T, from,
                                                                                                base, lse, votes);
}

void GatherRows(const DeviceRows& src, const DeviceRows& dst, const int32_t* idx, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  const int eb = int(TokenElemBytes(src.fmt, src.dim, 1)), sb = int(TokenScaleBytes(src.fmt, src.dim, 1));
  GatherKernel<<<dim3(unsigned(n), unsigned(src.n_kv)), 64, 0, s>>>(src, dst, idx, n, eb, sb);
}

}  // namespace atp::cuda
