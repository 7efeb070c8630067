// Kernels behind cuda/atp_rows.h.
#include <type_traits>

#include "cuda/atp_rows.h"
#include "cuda/convert.cuh"
#include "cuda/kv_rows.cuh"

namespace atp::cuda {

namespace {

constexpr int kThreads = 256;

unsigned Blocks(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

// Thread (block z, row j of the sorted block, element e): one element moved.
__global__ void GatherKernel(const float* first, const float* rest, int n, int B, int keep, int width, int span,
                             const int32_t* split, float* sum, float* kept) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= int64_t(n) * B * width) return;
  const int64_t z = t / (int64_t(B) * width);
  const int j = int(t / width % B), e = int(t % width), ns = B - keep;
  const int32_t src = split[(z * (width / span) + e / span) * B + j];
  const float* block = first ? (z == 0 ? first : rest + (z - 1) * B * width) : rest + z * B * width;
  const float x = block[int64_t(src) * width + e];
  if (j < ns) {
    if (sum) sum[(z * ns + j) * width + e] = x;
  } else if (kept) {
    kept[(z * keep + (j - ns)) * width + e] = x;
  }
}

// Thread (row, head, pair i): the pair (i, i + head_dim/2) of one row turned by -position * inv_freq[i].
__global__ void UnrotateKernel(float* x, int64_t n, int n_kv, int hd, int64_t pos0, const float* inv_freq) {
  const int half = hd / 2;
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n * n_kv * half) return;
  const int64_t r = t / (int64_t(n_kv) * half);
  const int h = int(t / half % n_kv), i = int(t % half);
  // As the CPU's ApplyRope at the negated int32 position: the angle in f32, then cos and sin.
  const float a = float(int32_t(-(pos0 + r))) * inv_freq[i];
  const float cs = cosf(a), sn = sinf(a);
  float* v = x + (r * n_kv + h) * hd;
  const float x0 = v[i], x1 = v[i + half];
  v[i] = x0 * cs - x1 * sn;
  v[i + half] = x1 * cs + x0 * sn;
}

// Thread (row of the n * B, element e): one element of K and of V.
__global__ void SubtractKernel(const float* U, const int32_t* ranks, int64_t rows, int B, int extra, int span,
                               const float* PK, const float* PV, int width, float* K, float* V) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= rows * width) return;
  const int64_t row = t / width, z = row / B;
  const int e = int(t % width), i = int(row % B), groups = width / span, r = ranks[z * groups];
  const float* u = U + ((z * groups + e / span) * B + i) * B;  // row i of U_zg; column c at u[c]
  int64_t at = 0;  // block z's first principal row
  for (int64_t y = 0; y < z; ++y) at += ranks[y * groups] + extra;
  float k = K[t], v = V[t];
  for (int c = 0; c < r; ++c) {
    const int64_t p = (at + c) * width + e;
    k -= u[c] * PK[p];
    v -= u[c] * PV[p];
  }
  K[t] = k, V[t] = v;
}

// Thread (row, head, c): elements 8c .. 8c+7 and their RoPE partners 8c + half .. of one rebuilt (or
// kept) key and value row (c < head_dim / 16). F: the principal rows' and outputs' form; R: the residuals'.
template <KvFormat F, KvFormat R, typename T>
__global__ void RebuildKernel(RebuildArgs a) {
  const int hd = a.pk.dim, n_kv = a.pk.n_kv, chunks = hd / 16, half = hd / 2;
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= a.nb * a.B * n_kv * chunks) return;
  const int64_t row = t / (int64_t(n_kv) * chunks), b = row / a.B;
  const int h = int(t / chunks % n_kv), c = int(t % chunks), i = int(row % a.B), g = a.groups > 1 ? h : 0;
  // Block b's rows in pk and pv: its r_b principal rows from row `first` on, then its kept rows.
  const int64_t first = a.ends ? (b > 0 ? a.ends[b - 1] : 0) : b * (a.r + a.B - a.n);
  const int rb = a.ends ? int(a.ends[b] - first) - (a.B - a.n) : a.r;
  float k[2][8], v[2][8], p[8];
  if (i >= a.n) {  // a kept row, as stored
    for (int part = 0; part < 2; ++part) {
      Load8<F>(a.pk, first + rb + (i - a.n), h, c + part * chunks, k[part]);
      Load8<F>(a.pv, first + rb + (i - a.n), h, c + part * chunks, v[part]);
    }
  } else {
    const int64_t token = b * a.n + i;  // its residual row
    const float* u = a.coefs + ((b * a.groups + g) * a.n + i) * a.r;
    for (int part = 0; part < 2; ++part) {  // elements 8c.. (part 0) and half + 8c.. (part 1)
      const int cc = c + part * chunks;
      Load8<R>(a.rk, token, h, cc, k[part]);
      Load8<R>(a.rv, token, h, cc, v[part]);
      for (int q = 0; q < rb; ++q) {
        const float w = u[q];
        Load8<F>(a.pk, first + q, h, cc, p);
#pragma unroll
        for (int e = 0; e < 8; ++e) k[part][e] += w * p[e];
        Load8<F>(a.pv, first + q, h, cc, p);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[part][e] += w * p[e];
      }
    }
  }
  if (a.inv_freq && i < a.n) {
    const int o = a.offsets ? a.offsets[(b * a.groups + g) * a.n + i] : i;
#pragma unroll
    for (int e = 0; e < 8; ++e) {  // kv/rope_rows.cpp's BlockRope::Rotate at base b B, offset o
      const float f = a.inv_freq[8 * c + e];
      const float ab = float(b * a.B) * f, ao = float(o) * f;
      const float cb = cosf(ab), sb = sinf(ab), co = cosf(ao), so = sinf(ao);
      const float cs = cb * co - sb * so, sn = sb * co + cb * so;
      const float x0 = k[0][e], x1 = k[1][e];
      k[0][e] = x0 * cs - x1 * sn;
      k[1][e] = x1 * cs + x0 * sn;
    }
  }
  T* ok = reinterpret_cast<T*>(a.out_k.elems) + (row * n_kv + h) * hd + 8 * c;
  T* ov = reinterpret_cast<T*>(a.out_v.elems) + (row * n_kv + h) * hd + 8 * c;
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    ok[e] = FromFloat<T>(k[0][e]), ok[half + e] = FromFloat<T>(k[1][e]);
    ov[e] = FromFloat<T>(v[0][e]), ov[half + e] = FromFloat<T>(v[1][e]);
  }
}

template <KvFormat F, KvFormat R>
void LaunchRebuild(const RebuildArgs& a, int64_t threads, cudaStream_t s) {
  using T = std::conditional_t<F == KvFormat::kF32, float, std::conditional_t<F == KvFormat::kF16, __half, __nv_bfloat16>>;
  RebuildKernel<F, R, T><<<Blocks(threads), kThreads, 0, s>>>(a);
}

}  // namespace

void UnrotateKeys(float* x, int64_t n, int n_kv, int head_dim, int64_t pos0, const float* inv_freq, cudaStream_t s) {
  const int64_t threads = n * n_kv * (head_dim / 2);
  if (threads > 0) UnrotateKernel<<<Blocks(threads), kThreads, 0, s>>>(x, n, n_kv, head_dim, pos0, inv_freq);
}

void SubtractProjection(const float* U, const int32_t* ranks, int n, int B, int extra, int span, const float* PK,
                        const float* PV, int width, float* K, float* V, cudaStream_t s) {
  const int64_t rows = int64_t(n) * B;
  if (rows > 0) SubtractKernel<<<Blocks(rows * width), kThreads, 0, s>>>(U, ranks, rows, B, extra, span, PK, PV, width, K, V);
}

void GatherSplit(const float* first, const float* rest, int n, int B, int keep, int width, int span, const int32_t* split,
                 float* sum, float* kept, cudaStream_t s) {
  const int64_t threads = int64_t(n) * B * width;
  if (threads > 0) GatherKernel<<<Blocks(threads), kThreads, 0, s>>>(first, rest, n, B, keep, width, span, split, sum, kept);
}

void RebuildRows(const RebuildArgs& a, cudaStream_t s) {
  const int64_t threads = a.nb * a.B * a.pk.n_kv * (a.pk.dim / 16);
  if (threads <= 0) return;
  WithFormat(a.pk.fmt, [&](auto f) {
    constexpr KvFormat F = decltype(f)::value;
    if constexpr (IsExact(F)) {
      WithFormat(a.rk.fmt, [&](auto rf) {
        constexpr KvFormat R = decltype(rf)::value;
        if constexpr (!IsExact(R)) LaunchRebuild<F, R>(a, threads, s);
      });
    }
  });
}

}  // namespace atp::cuda
