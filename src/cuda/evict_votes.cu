// Kernels behind cuda/evict_votes.h: attention votes in f32, and row gathers in any exact or MX form.
#include <cmath>

#include "cuda/evict_votes.h"

namespace atp::cuda {

namespace {

constexpr int kThreads = 128, kWarps = kThreads / 32;
constexpr int kMaxPerLane = 4;  // head_dim <= 128 (CheckAttnShape): elements per lane

// A row of d floats spread over a warp's lanes: lane l holds elements l, l + 32, ... (coalesced loads).
__device__ inline void LoadLanes(const float* row, int d, int lane, float (&r)[kMaxPerLane]) {
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) r[i] = lane + 32 * i < d ? row[lane + 32 * i] : 0.f;
}
// The dot product of a spread row with q, summed over the warp in a fixed butterfly order: every lane
// gets the same sum.
__device__ inline float WarpDot(const float (&k)[kMaxPerLane], const float* q, int d, int lane) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i)
    if (lane + 32 * i < d) s = fmaf(q[lane + 32 * i], k[i], s);
#pragma unroll
  for (int w = 16; w > 0; w /= 2) s += __shfl_xor_sync(0xffffffffu, s, w);
  return s;
}

// One block per (voting query, query head): the log-sum-exp of its scaled scores over the rows it sees.
// Warp w reads rows w, w + kWarps, ... (each row by all its lanes) keeping a running (max, sum); the
// block merges the warps' in a fixed order.
__global__ void LseKernel(AttnShape a, const float* K, const float* Q, int64_t from, int64_t base, float* lse) {
  const int64_t t = from + blockIdx.x;
  const int h = blockIdx.y, g = a.n_heads / a.n_kv, kvh = h / g, d = a.head_dim;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const float scale = rsqrtf(float(d));
  float q[kMaxPerLane];
  LoadLanes(Q + (t * a.n_heads + h) * d, d, lane, q);
  const int64_t seen = base + t + 1;
  float m = -INFINITY, l = 0.f;
  for (int64_t j = warp; j < seen; j += kWarps) {
    float k[kMaxPerLane];
    LoadLanes(K + (j * a.n_kv + kvh) * d, d, lane, k);
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) s = fmaf(q[i], k[i], s);
#pragma unroll
    for (int w = 16; w > 0; w /= 2) s += __shfl_xor_sync(0xffffffffu, s, w);
    s *= scale;
    const float nm = fmaxf(m, s);
    l = l * expf(m - nm) + expf(s - nm);
    m = nm;
  }
  __shared__ float sm[kWarps], sl[kWarps];
  if (lane == 0) sm[warp] = m, sl[warp] = l;
  __syncthreads();
  if (threadIdx.x == 0) {
    float M = sm[0], L = sl[0];
    for (int w = 1; w < kWarps; ++w) {
      const float nm = fmaxf(M, sm[w]);
      L = (L > 0.f ? L * expf(M - nm) : 0.f) + (sl[w] > 0.f ? sl[w] * expf(sm[w] - nm) : 0.f);
      M = nm;
    }
    lse[blockIdx.x * a.n_heads + h] = M + logf(L);
  }
}

// One warp per (row, KV head): the row's weight under every voting query and query head of the group,
// the row held in the warp's registers, each score a warp-wide dot product.
__global__ void VoteKernel(AttnShape a, const float* K, int64_t n, const float* Q, int64_t T, int64_t from,
                           int64_t base, const float* lse, float* votes) {
  const int lane = threadIdx.x % 32;
  const int64_t j = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int kvh = blockIdx.y, g = a.n_heads / a.n_kv, d = a.head_dim;
  if (j >= n) return;  // whole warps
  const float scale = rsqrtf(float(d));
  float k[kMaxPerLane];
  LoadLanes(K + (j * a.n_kv + kvh) * d, d, lane, k);
  float v = 0.f;
  for (int64_t t = j - base > from ? j - base : from; t < T; ++t)  // the queries that see row j: base + t >= j
    for (int hh = 0; hh < g; ++hh) {
      const int h = kvh * g + hh;
      const float s = WarpDot(k, Q + (t * a.n_heads + h) * d, d, lane) * scale;
      v += expf(s - lse[(t - from) * a.n_heads + h]);
    }
  if (lane == 0) votes[kvh * n + j] = v;
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
  VoteKernel<<<dim3(unsigned((n + kWarps - 1) / kWarps), unsigned(a.n_kv)), kThreads, 0, s>>>(a, K, n, Q, T, from, base,
                                                                                            lse, votes);
}

void GatherRows(const DeviceRows& src, const DeviceRows& dst, const int32_t* idx, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  const int eb = int(TokenElemBytes(src.fmt, src.dim, 1)), sb = int(TokenScaleBytes(src.fmt, src.dim, 1));
  GatherKernel<<<dim3(unsigned(n), unsigned(src.n_kv)), 64, 0, s>>>(src, dst, idx, n, eb, sb);
}

}  // namespace atp::cuda
