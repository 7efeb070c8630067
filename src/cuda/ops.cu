// Kernels behind cuda/ops.h: one thread per element, or one block per row where a row reduces.
#include <algorithm>
#include <cstdlib>
#include <cuda_fp16.h>

#include "cuda/check.h"
#include "cuda/convert.cuh"
#include "cuda/ops.h"
#include "cuda/pdl.cuh"

namespace atp::cuda {

namespace {

constexpr int kThreads = 256;
inline unsigned Blocks(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

template <typename T>
__global__ void ToBf16Kernel(const T* src, int64_t n, bf16* dst) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = __float2bfloat16_rn(ToFloat(src[i]));
}

__global__ void EmbedKernel(const bf16* __restrict__ table, const int32_t* __restrict__ tokens, int d,
                            float* __restrict__ x) {
  LetNextStart();
  const int64_t r = blockIdx.x;
  const bf16* row = table + int64_t(tokens[r]) * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) x[r * d + i] = __bfloat162float(row[i]);
}

// Sum over the block; every thread gets the total. `red` holds one float per warp.
__device__ float BlockSum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = 0;
  for (int w = 0; w < warps; ++w) t += red[w];
  __syncthreads();  // red may be reused by the caller's next reduction
  return t;
}

template <typename T>
__global__ void RmsNormKernel(const float* x, const int32_t* rows, int d, const float* w, float eps, T* y) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + (rows ? int64_t(rows[r]) : r) * d;
  float ss = 0;
  for (int i = threadIdx.x; i < d; i += blockDim.x) ss += xr[i] * xr[i];
  // f32 sums of d/256 squares per thread, then a tree: relative error ~1e-6, far under bf16's
  // 4e-3 rounding of the output (the CPU sums in double).
  const float inv = rsqrtf(BlockSum(ss, red) / float(d) + eps);
  for (int i = threadIdx.x; i < d; i += blockDim.x) y[r * d + i] = FromFloat<T>(xr[i] * inv * w[i]);
}

// Thread (r, j) handles rotation pair j % half of head j / half of row r (query heads, then key
// heads), or, past those, element j - (n_heads + n_kv) * half of V. Every thread does one
// independent load pair: a block per row looping over the heads took 10.7 us per decode step on the
// H200, a chain of dependent L2 round trips.
__global__ void BiasRopeSplitKernel(const float* __restrict__ qkv, const float* __restrict__ bias,
                                    const int32_t* __restrict__ pos, const float* __restrict__ inv_freq, int n_heads,
                                    int n_kv, int hd, float* __restrict__ q, float* __restrict__ k, float* __restrict__ v) {
  LetNextStart();
  WaitForPrevious();
  const int64_t r = blockIdx.x;
  const int qd = n_heads * hd, kvd = n_kv * hd, width = qd + 2 * kvd, half = hd / 2;
  const int j = int(blockIdx.y) * blockDim.x + threadIdx.x, pairs = (n_heads + n_kv) * half;
  const float* in = qkv + r * width;
  auto at = [&](int c) { return bias ? in[c] + bias[c] : in[c]; };
  if (j >= pairs) {
    const int c = j - pairs;
    if (c < kvd) v[r * kvd + c] = at(qd + kvd + c);
    return;
  }
  const int h = j / half, i = j % half;
  // Same f32 angle as the CPU path (and PyTorch), then the accurate cosf/sinf.
  const float a = float(pos[r]) * inv_freq[i];
  const float cs = cosf(a), sn = sinf(a);
  const int base = h < n_heads ? h * hd : qd + (h - n_heads) * hd;
  const float x0 = at(base + i), x1 = at(base + i + half);
  float* o = h < n_heads ? q + r * qd + h * hd : k + r * kvd + (h - n_heads) * hd;
  o[i] = x0 * cs - x1 * sn;
  o[i + half] = x1 * cs + x0 * sn;
}

__global__ void SiluMulKernel(const float* gu, int64_t n, int ffn, bf16* h) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * ffn) return;
  const int64_t r = i / ffn, c = i % ffn;
  const float g = gu[r * 2 * ffn + c], u = gu[r * 2 * ffn + ffn + c];
  h[i] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * u);
}

__device__ __forceinline__ float RoundBf16(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// A persistent GEMV: warp w of the grid's `warps` computes rows w, w + warps, ... Its work is a
// sequence of batches (kGemvVec 16-byte vectors of W per lane: 2048 bf16 of a row per batch) in
// which the next batch's loads are issued before the current one is used, across row ends too, so
// every warp keeps two batches (8 KB) in flight. The first batch leaves before the previous kernel
// has finished (cuda/pdl.cuh) and before the block forms its input (RMSNorm, SiLU-gate) in shared
// memory: W depends on neither. Measured on the H200 (ncu, llama-3.2-1b decode): a block per 8 rows
// that formed its input first and then streamed four vectors per lane took 16 us for a 2048 x 8192
// down projection (2.1 TB/s) and 27 us for the 16384 x 2048 gate|up (2.5 TB/s).
constexpr int kGemvWarps = 8, kGemvVec = 8, kGemvBlocksPerSm = 2, kRound = 4;

__device__ __forceinline__ void GemvLoad(const bf16* W, int64_t row, int in, int n16, int base, uint4 (&a)[kGemvVec]) {
  const uint4* w = reinterpret_cast<const uint4*>(W + row * in);
#pragma unroll
  for (int u = 0; u < kGemvVec; ++u) {
    const int i = base + u * 32;
    a[u] = i < n16 ? __ldcs(w + i) : make_uint4(0, 0, 0, 0);  // W streams once: evict first
  }
}

__global__ void __launch_bounds__(kGemvWarps * 32, kGemvBlocksPerSm)
    GemvKernel(const bf16* W, int64_t out, int in, GemvInput x, float beta, float* y) {
  extern __shared__ float xs[];  // (in)
  __shared__ float red[32];
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * kGemvWarps, first = int64_t(blockIdx.x) * kGemvWarps + threadIdx.x / 32;
  const int n16 = in / 8, per_row = (n16 + kGemvVec * 32 - 1) / (kGemvVec * 32);
  const int64_t total = first < out ? ((out - 1 - first) / warps + 1) * per_row : 0;  // batches of this warp
  uint4 cur[kGemvVec], nxt[kGemvVec];
  if (total > 0) GemvLoad(W, first, in, n16, lane, cur);
  LetNextStart();
  WaitForPrevious();  // launched with LaunchAfter: the loads above overlap the previous kernel's tail

  // The prologue reads its input in rounds of kRound float4 per thread, all loads of a round issued
  // before their use: a loop of one element per iteration waited out an L2 round trip per element
  // (16 us of the down projection's 26 at 8192 inputs).
  const int n4 = in / 4;
  const float4* x4 = reinterpret_cast<const float4*>(x.x);
  float inv = 1.f;
  if (x.kind == GemvInput::kRmsNorm) {
    float ss = 0;
    for (int c0 = threadIdx.x; c0 < n4; c0 += kRound * blockDim.x) {
      float4 v[kRound];
#pragma unroll
      for (int u = 0; u < kRound; ++u) {
        const int c = c0 + u * blockDim.x;
        v[u] = c < n4 ? __ldg(x4 + c) : make_float4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kRound; ++u) ss += v[u].x * v[u].x + v[u].y * v[u].y + v[u].z * v[u].z + v[u].w * v[u].w;
    }
    inv = rsqrtf(BlockSum(ss, red) / float(in) + x.eps);
  }
  const float4* m4 = reinterpret_cast<const float4*>(x.kind == GemvInput::kRmsNorm ? x.norm_w : x.x + in);
  for (int c0 = threadIdx.x; c0 < n4; c0 += kRound * blockDim.x) {
    float4 v[kRound], m[kRound] = {};  // m: the norm weights, or the up half
#pragma unroll
    for (int u = 0; u < kRound; ++u) {
      const int c = c0 + u * blockDim.x;
      if (c >= n4) break;
      v[u] = __ldg(x4 + c);
      if (x.kind != GemvInput::kF32) m[u] = __ldg(m4 + c);
    }
#pragma unroll
    for (int u = 0; u < kRound; ++u) {
      const int c = c0 + u * blockDim.x;
      if (c >= n4) break;
      float e[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
      const float f[4] = {m[u].x, m[u].y, m[u].z, m[u].w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (x.kind == GemvInput::kRmsNorm) e[j] = e[j] * inv * f[j];
        if (x.kind == GemvInput::kSiluMul) e[j] = e[j] / (1.0f + expf(-e[j])) * f[j];
      }
      reinterpret_cast<float4*>(xs)[c] = make_float4(RoundBf16(e[0]), RoundBf16(e[1]), RoundBf16(e[2]), RoundBf16(e[3]));
    }
  }
  __syncthreads();

  int64_t row = first;
  int b = 0;  // batch of the row in cur
  float acc = 0;
  for (int64_t t = 0; t < total; ++t) {
    const bool row_end = b == per_row - 1;
    if (t + 1 < total) GemvLoad(W, row_end ? row + warps : row, in, n16, (row_end ? 0 : b + 1) * kGemvVec * 32 + lane, nxt);
#pragma unroll
    for (int u = 0; u < kGemvVec; ++u) {
      const int i = b * kGemvVec * 32 + lane + u * 32;
      if (i >= n16) break;
      const __nv_bfloat162* pa = reinterpret_cast<const __nv_bfloat162*>(&cur[u]);
      const float4 x0 = reinterpret_cast<const float4*>(xs)[2 * i], x1 = reinterpret_cast<const float4*>(xs)[2 * i + 1];
      const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float2 fa = __bfloat1622float2(pa[k]);
        acc += fa.x * xv[2 * k] + fa.y * xv[2 * k + 1];
      }
    }
    if (row_end) {
      for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
      if (lane == 0) y[row] = beta == 0.f ? acc : acc + beta * y[row];
      acc = 0, row += warps, b = 0;
    } else {
      ++b;
    }
#pragma unroll
    for (int u = 0; u < kGemvVec; ++u) cur[u] = nxt[u];
  }
}

__global__ void F32ToBf16Kernel(const float* x, int64_t n, bf16* y) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16_rn(x[i]);
}

// One block per (token, head) row, one thread per output element; in_dim <= head_dim (<= 128) terms.
__global__ void ProjectHeadsKernel(const float* in, int heads, int in_dim, const float* P, int heads_per_basis,
                                   int out_dim, int s_in, int s_out, float scale, float* out) {
  const int64_t row = blockIdx.x;  // t * heads + h
  const int h = int(row % heads), o = threadIdx.x;
  if (o >= out_dim) return;
  const float* x = in + row * in_dim;
  const float* p = P + int64_t(h / heads_per_basis) * in_dim * out_dim + int64_t(o) * s_out;
  float acc = 0.f;
  for (int i = 0; i < in_dim; ++i) acc += x[i] * p[int64_t(i) * s_in];
  out[row * out_dim + o] = scale * acc;
}

}  // namespace

void ToBf16(DType t, const void* src, int64_t n, bf16* dst, cudaStream_t s) {
  if (n == 0) return;
  switch (t) {
    case DType::kF32: ToBf16Kernel<<<Blocks(n), kThreads, 0, s>>>(static_cast<const float*>(src), n, dst); break;
    case DType::kF16: ToBf16Kernel<<<Blocks(n), kThreads, 0, s>>>(static_cast<const __half*>(src), n, dst); break;
    case DType::kBF16: ToBf16Kernel<<<Blocks(n), kThreads, 0, s>>>(static_cast<const bf16*>(src), n, dst); break;
    default: std::abort();  // a bug: callers dequantize every block dtype on the host (forward.cpp)
  }
}

void EmbedRows(const bf16* table, const int32_t* tokens, int64_t n, int d, float* x, cudaStream_t s) {
  if (n > 0) EmbedKernel<<<unsigned(n), kThreads, 0, s>>>(table, tokens, d, x);
}

void RmsNormBf16(const float* x, const int32_t* rows, int64_t n, int d, const float* w, float eps, bf16* y,
                 cudaStream_t s) {
  if (n > 0) RmsNormKernel<<<unsigned(n), kThreads, 0, s>>>(x, rows, d, w, eps, y);
}

void RmsNormF32(const float* x, int64_t n, int d, const float* w, float eps, float* y, cudaStream_t s) {
  if (n > 0) RmsNormKernel<<<unsigned(n), kThreads, 0, s>>>(x, static_cast<const int32_t*>(nullptr), d, w, eps, y);
}

void BiasRopeSplit(const float* qkv, const float* bias, const int32_t* pos, const float* inv_freq, int64_t n,
                   int n_heads, int n_kv, int head_dim, float* q, float* k, float* v, cudaStream_t s) {
  const int items = (n_heads + n_kv) * (head_dim / 2) + n_kv * head_dim;
  if (n > 0)
    LaunchAfter(BiasRopeSplitKernel, dim3(unsigned(n), unsigned(Blocks(items))), dim3(kThreads), 0, s, qkv, bias, pos,
                inv_freq, n_heads, n_kv, head_dim, q, k, v);
}

void SiluMulBf16(const float* gu, int64_t n, int ffn, bf16* h, cudaStream_t s) {
  if (n > 0) SiluMulKernel<<<Blocks(n * ffn), kThreads, 0, s>>>(gu, n, ffn, h);
}

void Gemv(const bf16* W, int64_t out, int64_t in, const GemvInput& x, float beta, float* y, cudaStream_t s) {
  if (out <= 0) return;
  const int64_t blocks = std::min<int64_t>((out + kGemvWarps - 1) / kGemvWarps, int64_t(SmCount()) * kGemvBlocksPerSm);
  LaunchAfter(GemvKernel, dim3(unsigned(blocks)), dim3(kGemvWarps * 32), size_t(in) * sizeof(float), s, W, out, int(in), x,
              beta, y);
}

void ProjectHeads(const float* in, int64_t n, int heads, int in_dim, const float* P, int heads_per_basis,
                  int out_dim, int s_in, int s_out, float scale, float* out, cudaStream_t s) {
  if (n > 0)
    ProjectHeadsKernel<<<unsigned(n * heads), unsigned((out_dim + 31) / 32 * 32), 0, s>>>(
        in, heads, in_dim, P, heads_per_basis, out_dim, s_in, s_out, scale, out);
}

void F32ToBf16(const float* x, int64_t n, bf16* y, cudaStream_t s) {
  if (n > 0) F32ToBf16Kernel<<<Blocks(n), kThreads, 0, s>>>(x, n, y);
}

}  // namespace atp::cuda
